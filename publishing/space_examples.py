"""The Space's clickable examples and its note on what the model was trained on, from the corpus.

    dualspeechlm-space-examples --corpus data/corpus --output-dir spaces_demo/examples

Writes a few 16 kHz WAV clips of the corpus' test splits (utterances the model never trained on, in the training
voices and in the voice it never heard) and `examples.json`: per tab of the Space (`asr`, `tts`, `vc`, `qa`,
`translate`) the input values of each example, file names relative to the folder, under `training` what the
corpus manifest says the model learnt from (hours, voices, languages, vocabulary size, a few training sentences),
and `note`: those facts in plain words (`what_the_model_knows`), which the Space shows so that a visitor knows what
it will and will not understand, as the model card does. With `--samples` (a samples page of the model,
`dualspeechlm-samples`) it also copies, for the TTS and VC tabs, the first item of each test split of that page
under `heard`: the log-mel picture, the generated and the reference speech and a caption, which the Space shows
beside the tab so that a visitor hears and sees how the model speaks on its own test set.
`dualspeechlm-push` stages the folder with the Space.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import soundfile

from dualspeechlm.processing.corpus import load_corpus
from dualspeechlm.training.samples import SPLIT_TITLES

EXAMPLES_FILE = "examples.json"
LANGUAGE_NAMES = {"es": "Spanish", "fr": "French"}  # the corpus' translation targets
HEARD_TABS = ("tts", "vc")  # the Space's tabs shown beside a samples page's items of the same task
HEARD_FILES = ("log_mel", "generated", "reference")


def training_facts(corpus: str | Path) -> dict:
    """What a model trained on `corpus` learnt from, as the corpus manifest tells it, with three of its training
    sentences."""
    manifest = json.loads((Path(corpus) / "manifest.json").read_text())
    sentences = [str(text) for text in load_corpus(corpus, "speech")["train"].select(range(3))["text"]]
    voices = manifest["voices"]
    return {"hours": round(manifest["hours"], 1), "vocabulary_size": manifest["vocabulary_size"],
            "voices": sorted({voice["name"] for voice in voices["train"]}),
            "engines": sorted({voice["engine"] for voice in voices["train"]}),
            "unseen_voice": voices["unseen"]["name"],
            "translation_languages": [LANGUAGE_NAMES.get(code, code) for code in sorted(voices["translation"])],
            "sentences": sentences}


def what_the_model_knows(training: dict) -> str:
    """`training_facts` in a few plain sentences: what the model understands, and what it will not."""
    sentences = "; ".join(f"*{sentence}*" for sentence in training["sentences"])
    return (f"It was trained on {training['hours']:g} hours of synthesized speech only: {len(training['voices'])} "
            f"English voices of the {' and '.join(training['engines'])} speech engines reading sentences of a small "
            f"grammar of {training['vocabulary_size']} words (e.g. {sentences}), and their translations into "
            f"{' and '.join(training['translation_languages'])}. It understands such sentences in such voices (the "
            f"voice `{training['unseen_voice']}` of its test set is one it never heard); natural speech, a "
            "microphone's noise or words outside that grammar get nonsense back.")


def has_samples_page(folder: str | Path | None) -> bool:
    """Whether `folder` holds a samples page (`dualspeechlm-samples`' samples.json)."""
    return folder is not None and (Path(folder) / "samples.json").is_file()


def heard_samples(samples_dir: str | Path, output_dir: Path) -> dict:
    """Per tab of `HEARD_TABS`, the first item of each split of the samples page in `samples_dir`: its files copied
    into `output_dir` (`log_mel`, `generated` where speech was written, `reference`: their names) and `caption`."""
    samples_dir = Path(samples_dir)
    samples = json.loads((samples_dir / "samples.json").read_text())
    heard = {}
    for tab in HEARD_TABS:
        for split, tasks in samples["splits"].items():
            item = tasks[tab][0]
            files = {role: item["files"][role] for role in HEARD_FILES if role in item["files"]}
            for name in files.values():
                shutil.copyfile(samples_dir / name, output_dir / name)
            sim = "no speech written" if item.get("sim") is None else f"SIM {item['sim']:.2f} to the reference voice"
            whisper = item.get("transcripts", {}).get("whisper", {})
            caption = (f"Test split of {SPLIT_TITLES.get(split, split)}, spoken in voice `{item['voice']}`: "
                       f"*{item['reference']}*. {sim}"
                       + (f"; Whisper heard *{whisper.get('generated', '')}*" if whisper else "") + ".")
            heard.setdefault(tab, []).append({"caption": caption, **files})
    return heard


def write_space_examples(corpus: str | Path, output_dir: str | Path, per_tab: int = 2,
                         samples_dir: str | Path | None = None) -> dict:
    """Write the clips and `examples.json` into `output_dir` (emptied first), with `heard` from the samples page in
    `samples_dir` where one is given; returns the JSON's content."""
    output_dir = Path(output_dir)
    if samples_dir is not None and not has_samples_page(samples_dir):
        raise FileNotFoundError(f"no samples.json in {samples_dir}: `dualspeechlm-samples` (make samples) writes it")
    if output_dir.exists():
        shutil.rmtree(output_dir)
    output_dir.mkdir(parents=True)

    def clip(audio: dict, name: str) -> str:
        soundfile.write(output_dir / f"{name}.wav", audio["array"], audio["sampling_rate"])
        return f"{name}.wav"

    splits = {config: load_corpus(corpus, config) for config in ("speech", "vc", "qa", "translation")}
    test = {config: rows["test"] for config, rows in splits.items()}
    unseen = splits["speech"]["test_unseen_voice"]
    count = min(per_tab, *(len(rows) for rows in test.values()), len(unseen))
    examples = {"asr": [], "tts": [], "vc": [], "qa": [], "translate": []}
    for i in range(count):
        speech, vc, qa, translation = (test[config][i] for config in ("speech", "vc", "qa", "translation"))
        heard = unseen[i]  # the voice never heard in training, as a recognition input and as a voice to speak in
        examples["asr"] += [[clip(speech["audio"], f"asr-{i}")], [clip(heard["audio"], f"asr-unseen-voice-{i}")]]
        examples["tts"].append([speech["text"], f"asr-unseen-voice-{i}.wav"])
        examples["vc"].append([clip(vc["audio"], f"vc-source-{i}"), clip(vc["target_audio"], f"vc-target-{i}")])
        examples["qa"].append([clip(qa["audio"], f"qa-{i}"), qa["question"]])
        examples["translate"].append([clip(translation["audio"], f"translate-{i}"), translation["language"]])
    training = training_facts(corpus)
    content = {"examples": examples, "training": training, "note": what_the_model_knows(training)}
    if samples_dir is not None:
        content["heard"] = heard_samples(samples_dir, output_dir)
    (output_dir / EXAMPLES_FILE).write_text(json.dumps(content, indent=1) + "\n")
    return content


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="data/corpus")
    parser.add_argument("--output-dir", default="spaces_demo/examples")
    parser.add_argument("--per-tab", type=int, default=2, help="test items per tab")
    parser.add_argument("--samples", help="a samples page of the model (dualspeechlm-samples) to show beside the "
                        "TTS and VC tabs")
    args = parser.parse_args(argv)
    try:
        content = write_space_examples(args.corpus, args.output_dir, args.per_tab, args.samples)
    except FileNotFoundError as error:
        raise SystemExit(f"dualspeechlm-space-examples: {error}") from error
    print(f"{sum(len(rows) for rows in content['examples'].values())} examples written to {args.output_dir}/")


if __name__ == "__main__":
    main()
