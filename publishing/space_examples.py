"""The Space's clickable examples and its note on what the model was trained on, from the corpus.

    dualspeechlm-space-examples --corpus data/corpus --output-dir spaces_demo/examples

Writes a few 16 kHz WAV clips of the corpus' test splits (utterances the model never trained on, in the training
voices and in the voice it never heard) and `examples.json`: per tab of the Space (`asr`, `tts`, `vc`, `qa`,
`translate`) the input values of each example, file names relative to the folder, under `training` what the
corpus manifest says the model learnt from (hours, voices, languages, vocabulary size, a few training sentences),
and `note`: those facts in plain words (`what_the_model_knows`), which the Space shows so that a visitor knows what
it will and will not understand, as the model card does. `dualspeechlm-push` stages the folder with the Space.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import soundfile

from dualspeechlm.processing.corpus import load_corpus

EXAMPLES_FILE = "examples.json"
LANGUAGE_NAMES = {"es": "Spanish", "fr": "French"}  # the corpus' translation targets


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


def write_space_examples(corpus: str | Path, output_dir: str | Path, per_tab: int = 2) -> dict:
    """Write the clips and `examples.json` into `output_dir` (emptied first); returns the JSON's content."""
    output_dir = Path(output_dir)
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
    (output_dir / EXAMPLES_FILE).write_text(json.dumps(content, indent=1) + "\n")
    return content


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="data/corpus")
    parser.add_argument("--output-dir", default="spaces_demo/examples")
    parser.add_argument("--per-tab", type=int, default=2, help="test items per tab")
    args = parser.parse_args(argv)
    content = write_space_examples(args.corpus, args.output_dir, args.per_tab)
    print(f"{sum(len(rows) for rows in content['examples'].values())} examples written to {args.output_dir}/")


if __name__ == "__main__":
    main()
