"""Write a samples page of a trained DualSpeechLM folder: what it says and hears, beside the references.

    dualspeechlm-samples --model models/dualspeechlm --output-dir docs/samples

For each test split (`test`: the training voices; `test_unseen_voice`: a voice never heard in training) and each
task, the first `--per-split` test items of the corpus:
- TTS, VC, T2ST, SC: the generated speech beside the reference recording of the same words (VC and SC: also the
  input audio), both judges' transcripts of each (Whisper tiny.en and pocketsphinx; not for T2ST, whose Spanish and
  French answers they cannot read), the speaker similarity (SIM) of the generated to the reference voice, and a
  log-mel picture of the two, one above the other;
- ASR, S2TT, SER, SQA: the input audio, the model's answer and the reference answer.
The speech is sampled as the evaluation samples it (`model.config.speech_generation`, seed 0). Beside the 16 kHz WAV
files and PNG pictures it writes `README.md` (rendered by GitHub and the Hub: audio as links, pictures inline),
`index.html` (`<audio>` players) and `samples.json` (everything, for machines).
"""

from __future__ import annotations

import argparse
import html
import json
import shutil
from pathlib import Path

import numpy as np
import soundfile
import torch

from dualspeechlm.modeling_dualspeechlm import DualSpeechLMForConditionalGeneration
from dualspeechlm.processing.corpus import load_corpus
from dualspeechlm.processing_dualspeechlm import DualSpeechLMProcessor
from dualspeechlm.tasks import TASKS, get_task

from .evaluate_dualspeechlm import SPLITS, answer_text, similarities, speak
from .judge import judge, speech_judges
from .multitask import task_example
from .token_cache import cached_tokens

SAMPLING_RATE = 16000
SPLIT_TITLES = {"test": "voices heard in training", "test_unseen_voice": "a voice never heard in training"}
ENGLISH_SPEECH = ("tts", "vc", "sc")  # the generation tasks whose speech the English-only judges can read


def log_mel_picture(generated: np.ndarray | None, reference: np.ndarray, path: Path) -> None:
    """A PNG of the log-mel spectrograms of the generated speech (top) and the reference (bottom), same scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torchaudio

    mel = torchaudio.transforms.MelSpectrogram(SAMPLING_RATE, n_fft=1024, hop_length=160, n_mels=80)
    panels = {"generated": generated, "reference": reference}
    figure, axes = plt.subplots(2, 1, figsize=(6, 3.2), sharex=True)
    seconds = max(len(audio) for audio in panels.values() if audio is not None) / SAMPLING_RATE
    for axis, (name, audio) in zip(axes, panels.items()):
        if audio is None or audio.size == 0:
            axis.text(0.5, 0.5, "no speech written", ha="center", va="center", transform=axis.transAxes)
        else:
            image = torch.log(mel(torch.from_numpy(audio).float()).clamp(min=1e-5)).numpy()
            axis.imshow(image, origin="lower", aspect="auto", vmin=-11.5, vmax=4.0, cmap="magma",
                        extent=(0, len(audio) / SAMPLING_RATE, 0, image.shape[0]))
        axis.set(ylabel=name, yticks=[], xlim=(0, seconds))
    axes[-1].set_xlabel("seconds")
    figure.tight_layout()
    figure.savefig(path, dpi=72)
    plt.close(figure)


def task_samples(model, processor, corpus: str, cache_dir: str, split: str, task: str, count: int, judges: dict,
                 output_dir: Path) -> list[dict]:
    """The first `count` items of `task` on `split`, their audio and pictures written into `output_dir`."""
    spec = get_task(task)
    rows = cached_tokens(corpus, spec.corpus_config, split, processor.ustokenizer, processor.feature_extractor, None,
                         processor.speaker_encoder, cache_dir).with_format("numpy")
    count = min(count, len(rows))
    examples = [task_example(task, rows[i]) for i in range(count)]
    source = load_corpus(corpus, spec.corpus_config)[split].select(range(count))
    items = [{"task": task, "split": split, "reference": str(example["answer"]), "files": {},
              **{field: str(example[field]) for field in spec.prompt_fields}} for example in examples]

    def write_audio(index: int, role: str, audio: np.ndarray) -> None:
        name = f"{split}-{task}-{index}-{role}.wav"
        soundfile.write(output_dir / name, audio, SAMPLING_RATE)
        items[index]["files"][role] = name

    for column in spec.input_audio:  # "audio" is the input, "question_audio" the spoken question
        for index, audio in enumerate(source[column]):
            write_audio(index, "input" if column == "audio" else column.removesuffix("_audio"), audio["array"])
    if not spec.speech_output:
        for item, answer in zip(items, answer_text(model, processor, examples)):
            item["answer"] = answer
        return items

    generated, _ = speak(model, processor, examples)
    references = [audio["array"] for audio in source[spec.answer_audio]]
    for index, (item, audio, reference, voice) in enumerate(zip(items, generated, references,
                                                                source[spec.answer_speaker])):
        item["voice"] = voice
        if audio is not None:
            write_audio(index, "generated", audio)
        write_audio(index, "reference", reference)
        picture = f"{split}-{task}-{index}-log-mel.png"
        log_mel_picture(audio, reference, output_dir / picture)
        item["files"]["log_mel"] = picture
    for item, sim in zip(items, similarities(processor.speaker_encoder, generated, references)):
        item["sim"] = sim
    if task in ENGLISH_SPEECH:
        silence = np.zeros(SAMPLING_RATE // 2, np.float32)  # what the judges hear where no speech was written
        for role, audios in (("generated", [silence if g is None else g for g in generated]),
                             ("reference", references)):
            heard = judge([item["reference"] for item in items], audios, SAMPLING_RATE, judges)["judges"]
            for name, scores in heard.items():
                for item, hypothesis in zip(items, scores["hypotheses"]):
                    item.setdefault("transcripts", {}).setdefault(name, {})[role] = hypothesis
    return items


def markdown_page(samples: dict) -> str:
    """README.md: one section per split and task, audio as links, pictures inline."""
    lines = [f"# Samples of `{samples['model']}`", "", samples["about"], ""]
    for split, tasks in samples["splits"].items():
        lines += [f"## {split}: {SPLIT_TITLES.get(split, split)}", ""]
        for task, items in tasks.items():
            lines += [f"### {task.upper()}", ""]
            for index, item in enumerate(items):
                prompt = "; ".join(f"{field}: {item[field]}" for field in get_task(task).prompt_fields)
                links = " · ".join(f"[{role}]({name})" for role, name in item["files"].items()
                                   if name.endswith(".wav"))
                lines.append(f"{index + 1}. {prompt + ' — ' if prompt else ''}{links}")
                if "answer" in item:
                    lines.append(f"   - answer: {item['answer']!r}; reference: {item['reference']!r}")
                else:
                    sim = "no speech" if item.get("sim") is None else f"{item['sim']:.2f}"
                    lines.append(f"   - voice {item['voice']}; SIM {sim}; words: {item['reference']!r}")
                    for judge_name, heard in item.get("transcripts", {}).items():
                        lines.append(f"   - {judge_name} heard: generated {heard.get('generated', '')!r}; "
                                     f"reference {heard['reference']!r}")
                if "log_mel" in item["files"]:
                    lines.append(f"\n   ![log-mel of the generated speech above the reference's]"
                                 f"({item['files']['log_mel']})")
            lines.append("")
    return "\n".join(lines)


def html_page(samples: dict) -> str:
    """index.html: the same content with `<audio>` players."""
    escape = html.escape
    body = [f"<h1>Samples of <code>{escape(samples['model'])}</code></h1>", f"<p>{escape(samples['about'])}</p>"]
    for split, tasks in samples["splits"].items():
        body.append(f"<h2>{escape(split)}: {escape(SPLIT_TITLES.get(split, split))}</h2>")
        for task, items in tasks.items():
            body.append(f"<h3>{task.upper()}</h3><table>")
            for item in items:
                players = "".join(f"<figure><figcaption>{escape(role)}</figcaption><audio controls preload=\"auto\" "
                                  f"src=\"{escape(name)}\"></audio></figure>"
                                  for role, name in item["files"].items() if name.endswith(".wav"))
                words = [f"{escape(field)}: {escape(str(item[field]))}" for field in get_task(task).prompt_fields]
                words.append(f"reference: {escape(item['reference'])}")
                if "answer" in item:
                    words.append(f"answer: <b>{escape(item['answer'])}</b>")
                else:
                    words.append(f"voice {escape(item['voice'])}, SIM "
                                 + ("no speech" if item.get("sim") is None else f"{item['sim']:.2f}"))
                    words += [f"{escape(name)} heard: {escape(heard.get('generated', ''))} / "
                              f"{escape(heard['reference'])}" for name, heard in item.get("transcripts", {}).items()]
                picture = (f"<img src=\"{escape(item['files']['log_mel'])}\" alt=\"log-mel\">"
                           if "log_mel" in item["files"] else "")
                body.append(f"<tr><td>{players}</td><td>{'<br>'.join(words)}</td><td>{picture}</td></tr>")
            body.append("</table>")
    style = ("body{font-family:sans-serif;max-width:72em;margin:auto}td{vertical-align:top;padding:.4em}"
             "figure{margin:0 0 .3em 0}figcaption{font-size:.8em;color:#555}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>DualSpeechLM samples</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def write_samples(folder: str | Path, output_dir: str | Path, corpus: str = "data/corpus",
                  cache_dir: str = "data/encoder_cache", whisper: str = "models/whisper-tiny.en", per_split: int = 2,
                  tasks: tuple[str, ...] = tuple(TASKS)) -> dict:
    """Write the samples page of the model `folder` into `output_dir` (emptied first); returns `samples.json`'s
    content."""
    output_dir = Path(output_dir)
    if output_dir.exists():
        shutil.rmtree(output_dir)
    output_dir.mkdir(parents=True)
    model = DualSpeechLMForConditionalGeneration.from_pretrained(folder).eval()
    processor = DualSpeechLMProcessor.from_pretrained(folder)
    judges = speech_judges(whisper, names=("whisper", "pocketsphinx"))
    speaks = ("through AcousticGPT's acoustic tokens" if model.codec_model is not None
              and not model.codec_model.decodes_ustokens_alone else "through the codec's USToken-reading decoder "
              "(the paper's Baseline-Semantic path)")
    samples = {"model": str(folder), "about": (
        f"The first {per_split} test item(s) of each task, per split, from the corpus the model was trained on "
        f"(synthesized voices, a grammar of a few hundred words): the model speaks {speaks}; SIM is the speaker "
        "encoder's cosine to the reference voice; the judges are Whisper tiny.en and pocketsphinx."), "splits": {}}
    for split in SPLITS:
        samples["splits"][split] = {task: task_samples(model, processor, corpus, cache_dir, split, task, per_split,
                                                       judges, output_dir) for task in tasks}
    (output_dir / "samples.json").write_text(json.dumps(samples, indent=1) + "\n")
    (output_dir / "README.md").write_text(markdown_page(samples) + "\n")
    (output_dir / "index.html").write_text(html_page(samples))
    return samples


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="models/dualspeechlm")
    parser.add_argument("--output-dir", default="docs/samples")
    parser.add_argument("--corpus", default="data/corpus")
    parser.add_argument("--cache-dir", default="data/encoder_cache")
    parser.add_argument("--whisper", default="models/whisper-tiny.en")
    parser.add_argument("--per-split", type=int, default=2, help="items per task and split")
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    args = parser.parse_args(argv)
    write_samples(args.model, args.output_dir, args.corpus, args.cache_dir, args.whisper, args.per_split,
                  tuple(args.tasks))
    print(f"samples written to {args.output_dir}/ (README.md, index.html)")


if __name__ == "__main__":
    main()
