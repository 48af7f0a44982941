"""The performance page: every speed figure of the project measured in one run, as ratios of figures timed side by
side, written to docs/PERFORMANCE.md (for people) and docs/performance.json (for machines).

    python -m bench.performance --model models/dualspeechlm --corpus data/corpus --cache-dir data/encoder_cache \
        --whisper models/whisper-tiny.en --ustokenizer models/ustokenizer --codec models/mel-codec \
        --speaker-encoder models/speaker-encoder                                      # what `make performance` runs
    python -m bench.performance --sections asr codec --limit 8 --repeats 1 --output-dir /some/where

Sections (`--sections`, all by default, measured in this order):
- asr: the model's ASR pipeline against Whisper tiny.en on the first `--limit` test clips, WER and real-time factor
  at batch 1 and 8;
- tts, vc: the model's speech generation, real-time factor and first-audio latency, KV cache vs none, batches of 8
  vs one by one (`bench/bench_generation.py`);
- ustokenizer: the real-length tokenizer against the 30 s padded Whisper encoder (`bench/bench_ustokenizer.py`);
- codec: encode + decode real-time factor per vocoder (`bench/bench_codec.py`);
- training: stage 1's and stage 3's steps per second and FLOP rate against this machine's matmul peak.
Each section needs the folders of the main job (`make quickstart`) it reads, and stops with the make target that
makes a missing one. Both files are rewritten as each section finishes, so a stopped run keeps what it measured.
"""

import argparse
import json
import os
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from bench.common import add_folder_arguments, add_timing_arguments, timing_clock
from bench.performance_page import SECTION_TITLES, performance_page, section_markdown
from bench.performance_speech import (
    SPLIT,
    NotReadyError,
    asr_section,
    codec_section,
    generation_section,
    speaking_model,
    ustokenizer_section,
)
from bench.performance_training import training_section
from dualspeechlm.training.machine import cpu_name, current_commit, usable_cores

# option -> (the file inside it that a finished folder holds, "" for the folder itself; the make target making it)
FOLDERS = {"model": ("config.json", "dualspeechlm"), "corpus": ("manifest.json", "corpus"),
           "cache_dir": ("", "encoder-cache"), "whisper": ("config.json", "whisper"),
           "ustokenizer": ("config.json", "ustokenizer"), "codec": ("config.json", "codec"),
           "speaker_encoder": ("config.json", "speaker-encoder")}
# section -> the folder options it reads
SECTION_FOLDERS = {"asr": ("model", "whisper", "corpus"), "tts": ("model", "corpus"), "vc": ("model", "corpus"),
                   "ustokenizer": ("ustokenizer", "corpus"), "codec": ("codec", "corpus"),
                   "training": ("corpus", "cache_dir", "ustokenizer", "codec", "speaker_encoder")}


def measure(name: str, args: argparse.Namespace, clock) -> dict:
    """Section `name`'s measurement on the folders and settings of `args`."""
    timing = dict(repeats=args.repeats, clock=clock)
    if name == "asr":
        return asr_section(args.model, args.whisper, args.corpus, args.limit, **timing)
    if name in ("tts", "vc"):
        return generation_section(name, args.model, args.corpus, args.limit, **timing)
    if name == "ustokenizer":
        return ustokenizer_section(args.ustokenizer, args.corpus, args.limit, **timing)
    if name == "codec":
        return codec_section(args.codec, args.corpus, args.limit, **timing)
    return training_section(args.corpus, args.cache_dir, args.ustokenizer, args.codec, args.speaker_encoder, **timing)


def missing_folders(args: argparse.Namespace) -> list[str]:
    """One line per folder the chosen sections read that is not made yet, naming the make target that makes it."""
    needed = dict.fromkeys(option for section in args.sections for option in SECTION_FOLDERS[section])
    lines = []
    for option in needed:
        folder = Path(getattr(args, option))
        marker, target = FOLDERS[option]
        if not (folder / marker).exists():
            lines.append(f"--{option.replace('_', '-')} {folder}: {'no ' + marker + ' in it' if marker else 'missing'}"
                         f" (`make {target}` makes it)")
    return lines


def machine() -> dict:
    """The machine and code the figures were measured on: `cpu`, `cores`, `torch`, `gpu` (None without CUDA),
    `date` (UTC) and `commit` (None outside a git checkout)."""
    return {"cpu": cpu_name(), "cores": usable_cores(), "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "commit": current_commit()}


def write(results: dict, output_dir: Path) -> None:
    """performance.json and PERFORMANCE.md of `results` into `output_dir`."""
    (output_dir / "performance.json").write_text(json.dumps(results, indent=2) + "\n")
    (output_dir / "PERFORMANCE.md").write_text(performance_page(results))


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_folder_arguments(parser, "model", "corpus", "cache-dir", "whisper", "ustokenizer", "codec", "speaker-encoder")
    parser.add_argument("--limit", type=int, default=32, help=f"test items of each speech section (split {SPLIT})")
    parser.add_argument("--sections", nargs="+", choices=list(SECTION_TITLES), default=list(SECTION_TITLES),
                        help="the sections to measure (default: all); the files written hold only these")
    parser.add_argument("--output-dir", type=Path, default=Path("docs"),
                        help="where PERFORMANCE.md and performance.json go")
    add_timing_arguments(parser, repeats=3, threads=os.cpu_count(), clock="wall")
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    if missing := missing_folders(args):
        raise SystemExit("bench.performance: the main job's folders these sections read are not made yet:\n  "
                         + "\n  ".join(missing))
    if {"tts", "vc"} & set(args.sections):
        try:
            speaking_model(args.model)  # stop now, not after the sections before them
        except NotReadyError as error:
            raise SystemExit(f"bench.performance: {error}") from None
    clock = timing_clock(args)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    results = {"command": shlex.join(["python", "-m", "bench.performance", *argv]), "machine": machine(),
               "settings": {"threads": args.threads, "clock": args.clock, "repeats": args.repeats,
                            "limit": args.limit, "split": SPLIT},
               "folders": {option: str(getattr(args, option)) for option in FOLDERS}, "sections": {}}
    for number, name in enumerate(args.sections, 1):
        began = time.perf_counter()
        results["sections"][name] = measure(name, args, clock)
        write(results, args.output_dir)
        print(f"\n[{number}/{len(args.sections)}] {name}: {time.perf_counter() - began:.0f} s\n\n"
              f"{section_markdown(name, results)}\n", flush=True)
    print(f"wrote {args.output_dir / 'PERFORMANCE.md'} and {args.output_dir / 'performance.json'}")


if __name__ == "__main__":
    main()
