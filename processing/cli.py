"""`dualspeechlm-data`: build and summarise the embedded speech corpus (flite, festival and espeak-ng voices)."""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from pathlib import Path

from .corpus import CONFIG_TASKS, SPLITS, CorpusConfig, build_corpus


def _size(text: str) -> tuple[str, tuple[int, int, int]]:
    name, _, counts = text.partition("=")
    if name not in CONFIG_TASKS:
        raise argparse.ArgumentTypeError(f"unknown config {name!r}; choose from {sorted(CONFIG_TASKS)}")
    try:
        train, validation, test = (int(n) for n in counts.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected CONFIG=TRAIN,VALIDATION,TEST, got {text!r}") from None
    return name, (train, validation, test)


def summarize(manifest: dict) -> str:
    """A Markdown summary of a corpus manifest: rows and hours per config and split, rows per voice."""
    seconds, rows, voices = defaultdict(float), Counter(), Counter()
    for utterance in manifest["utterances"]:
        key = (utterance["config"], utterance["split"])
        seconds[key] += utterance["duration"]
        rows[key] += 1
        voices[utterance["speaker"]] += 1
    lines = [
        f"corpus generator {manifest['generator_version']}, seed {manifest['seed']}, "
        f"{manifest['synthesized_clips']} clips, {manifest['hours']:.2f} h of audio in all, "
        f"vocabulary of {manifest['vocabulary_size']} English words",
        "",
        "| config | tasks | " + " | ".join(SPLITS) + " |",
        "|---|---|" + "---|" * len(SPLITS),
    ]
    for name, info in manifest["configs"].items():
        cells = [f"{rows[name, s]} ({seconds[name, s] / 60:.1f} min)" for s in SPLITS]
        lines.append(f"| {name} | {', '.join(info['tasks'])} | " + " | ".join(cells) + " |")
    lines += ["", "| voice | utterances (input audio) |", "|---|---|"]
    lines += [f"| {voice} | {count} |" for voice, count in sorted(voices.items())]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="dualspeechlm-data", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="synthesize the corpus (reused when already built)")
    build.add_argument("--output-dir", default="data/corpus", type=Path)
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--scale", type=float, default=1.0,
                       help="multiply every split size (e.g. 0.1 for a quick corpus)")
    build.add_argument("--size", type=_size, action="append", default=[], metavar="CONFIG=TRAIN,VAL,TEST",
                       help=f"override one config's split sizes; configs: {', '.join(CONFIG_TASKS)}")
    build.add_argument("--workers", type=int, default=2,
                       help="parallel synthesis threads (each runs engine processes)")
    build.add_argument("--force", action="store_true", help="rebuild even if an identical corpus exists")
    summary = commands.add_parser("summary", help="print rows, hours and voices of a built corpus")
    summary.add_argument("--corpus", default="data/corpus", type=Path)
    args = parser.parse_args(argv)

    if args.command == "build":
        config = CorpusConfig(seed=args.seed, workers=args.workers).scaled(args.scale)
        config.sizes.update(dict(args.size))
        manifest = build_corpus(args.output_dir, config, force=args.force)
    else:
        manifest_path = args.corpus / "manifest.json"
        if not manifest_path.is_file():
            parser.error(f"no corpus at {args.corpus}: run `dualspeechlm-data build --output-dir {args.corpus}`")
        manifest = json.loads(manifest_path.read_text())
    print(summarize(manifest))


if __name__ == "__main__":
    main()
