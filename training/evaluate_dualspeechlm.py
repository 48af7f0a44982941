"""Evaluate a trained DualSpeechLM folder on the corpus test splits, all eight tasks.

Each task is scored by:

- ASR: WER of the transcript; Whisper tiny.en's own WER on the same audio beside it.
- SER, SQA: exact-match accuracy (normalised text).
- S2TT: BLEU (sacrebleu).
- TTS, VC, SC: the judges' WER on the generated speech (Whisper tiny.en, and for TTS pocketsphinx with its generic
  and with the corpus' language model) beside their WER on the corpus' reference audio of the same words; SIM
  (speaker encoder cosine) to the reference.
- T2ST: SIM only: both judges are English-only and the targets are Spanish / French.
- TTS, VC, SC, T2ST semantic-only (with `--semantic-codec`): as above, on the same written USTokens rendered by a
  codec that decodes USTokens alone (the paper's Baseline-Semantic way of speaking) instead of AcousticGPT's codes.
- TTS resynthesis: the judges' WER on speech AcousticGPT renders from the reference audio's own USTokens: the
  ceiling of TTS with perfectly written USTokens, which tells the LLM's share of TTS errors from AcousticGPT's + the
  codec's.

Results land in `<model>/evaluation.json` + `evaluation.md`, a few generated waveforms in `samples/` (or in
`--output-dir`, which leaves the model folder's own evaluation as it was: scoring it on another corpus, say);
`--tasks` scores a subset.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import soundfile
import torch
import yaml
from tqdm.auto import tqdm

from dualspeechlm.codecs import load_codec
from dualspeechlm.modeling_dualspeechlm import DualSpeechLMForConditionalGeneration, audio_arrays
from dualspeechlm.processing.corpus import load_corpus
from dualspeechlm.processing_dualspeechlm import DualSpeechLMProcessor
from dualspeechlm.tasks import TASKS, UNDERSTANDING_TASKS, get_task

from .judge import judge, speech_judges
from .metrics import normalize_text, word_error_rate
from .multitask import task_example
from .token_cache import cached_tokens

SPLITS = ("test", "test_unseen_voice")
DEFAULT_LIMITS = {name: task.eval_limit for name, task in TASKS.items()}


def batches(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


@torch.no_grad()
def answer_text(model, processor, examples: list[dict], batch_size: int = 16, max_new_tokens: int = 48) -> list[str]:
    """Greedy text answers of understanding examples."""
    texts = []
    for chunk in batches(examples, batch_size):
        inputs = processor.build_inputs(chunk, with_answers=False, padding_side="left")
        generated = model.generate(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                   do_sample=False, num_beams=1, max_new_tokens=max_new_tokens)
        texts += processor.tokenizer.batch_decode(generated[:, inputs["input_ids"].shape[1]:],
                                                  skip_special_tokens=True)
    return [text.strip() for text in texts]


@torch.no_grad()
def speech_outputs(model, processor, examples: list[dict], batch_size: int = 16, seed: int = 0,
                   from_reference: bool = False, **acoustic_kwargs):
    """One `DualSpeechLMSpeechOutput` per batch of generation examples (written USTokens and waveforms), each item in
    the voice of its target's speaker embedding; sampling as in the paper (model.config.speech_generation /
    acoustic_generation), seeded. `from_reference`: AcousticGPT renders the examples' *reference*
    USTokens (`answer_speech_ids`) instead of the LLM's (`model.render_speech` on the teacher-forced sequences),
    with AcousticGPT's sampling updated by `acoustic_kwargs` (e.g. `do_sample=False`)."""
    torch.manual_seed(seed)
    for chunk in batches(examples, batch_size):
        speakers = torch.from_numpy(np.stack([ex["speaker"] for ex in chunk]))
        if from_reference:
            inputs = processor.build_inputs(chunk, with_answers=True, padding_side="left")
            # every row ends with EOS: drop it
            ids, mask = inputs["input_ids"][:, :-1], inputs["attention_mask"][:, :-1]
            condition = inputs["condition_mask"][:, :-1].bool() | model.config.is_speech_token(ids)
            yield model.render_speech(ids, mask, condition, speakers, output_audio=True, **acoustic_kwargs)
        else:
            inputs = processor.build_inputs(chunk, with_answers=False, padding_side="left")
            yield model.generate_speech(inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                        condition_mask=inputs["condition_mask"], speaker_embeddings=speakers,
                                        output_audio=True,
                                        **{f"acoustic_{key}": value for key, value in acoustic_kwargs.items()})


def speak(model, processor, examples: list[dict], semantic_codec=None, **kwargs) -> tuple[list, list | None]:
    """(waveforms of generation examples through the model's codec, the same written USTokens rendered with the same
    voice by `semantic_codec`, one that `decodes_ustokens_alone`, or None without it): the dual-token path beside the
    semantic-only one; None items where no speech was written. kwargs: `speech_outputs`'."""
    spoken, semantic = [], []
    for out in speech_outputs(model, processor, examples, **kwargs):
        spoken += out.audio_arrays()
        if semantic_codec is not None:
            semantic += audio_arrays(*model.decode_ustokens(semantic_codec, out.ustokens, out.ustoken_lengths,
                                                            out.speaker_embeddings))
    spoken, semantic = ([audio if audio.size else None for audio in audios] for audios in (spoken, semantic))
    return spoken, semantic if semantic_codec is not None else None


def as_judged(generated: list) -> list[np.ndarray]:
    """Generated waveforms with half a second of silence where no speech was written."""
    return [g if g is not None else np.zeros(8000, np.float32) for g in generated]


def similarities(speaker_encoder, generated: list, references: list[np.ndarray]) -> list[float | None]:
    """Per item, the cosine of the speaker embeddings of generated and reference audio; None where the generated
    audio is missing or too short to embed."""
    kept = [i for i, g in enumerate(generated) if g is not None and len(g) >= speaker_encoder.config.min_samples]
    scores = [None] * len(generated)
    if kept:
        a = speaker_encoder.embed([generated[i] for i in kept], sampling_rate=16000)
        b = speaker_encoder.embed([references[i] for i in kept], sampling_rate=16000)
        for i, cosine in zip(kept, torch.nn.functional.cosine_similarity(a, b).tolist()):
            scores[i] = cosine
    return scores


def similarity(speaker_encoder, generated: list, references: list[np.ndarray]) -> float:
    """Mean of `similarities` over the items that hold speech long enough to embed (NaN when none does)."""
    scores = [score for score in similarities(speaker_encoder, generated, references) if score is not None]
    return float(torch.tensor(scores).mean()) if scores else float("nan")


def evaluate_split(model, processor, corpus: str, cache_dir: str, split: str, judges: dict, limits: dict,
                   samples_dir: Path, semantic_codec=None) -> dict:
    """Every task's scores on `split`; `judges`: `speech_judges()`, by name. With `semantic_codec` each generation
    task also gets a `<task>_semantic` row: its written USTokens rendered by that codec (`speak`)."""
    parts = (processor.ustokenizer, processor.feature_extractor, None, processor.speaker_encoder)  # no codes: unread
    results = {}
    for task, limit in limits.items():
        config = get_task(task).corpus_config
        rows = cached_tokens(corpus, config, split, *parts, cache_dir).with_format("numpy")
        count = min(limit, len(rows))
        examples = [task_example(task, rows[i]) for i in range(count)]
        if task in UNDERSTANDING_TASKS:
            references = [ex["answer"] for ex in examples]
            hypotheses = answer_text(model, processor, examples)
            if task == "asr":
                score = {"wer": word_error_rate(references, hypotheses)}
                audio = [item["array"]
                         for item in load_corpus(corpus, "speech")[split].select(range(count))["audio"]]
                score["whisper_wer_same_audio"] = word_error_rate(references,
                                                                  judges["whisper"].transcribe(audio, 16000))
            elif task == "s2tt":
                import sacrebleu

                score = {"bleu": sacrebleu.corpus_bleu(hypotheses, [references]).score}
            else:
                score = {"accuracy": float(np.mean([normalize_text(r) == normalize_text(h)
                                                    for r, h in zip(references, hypotheses)]))}
            score["samples"] = [{"reference": r, "hypothesis": h} for r, h in list(zip(references, hypotheses))[:5]]
        else:
            source = load_corpus(corpus, config)[split].select(range(count))
            generated, semantic = speak(model, processor, examples, semantic_codec)
            if semantic is not None:
                results[f"{task}_semantic"] = {"examples": count,
                                               **speech_scores(task, semantic, source, processor, judges)}
            score = speech_scores(task, generated, source, processor, judges)
            samples_dir.mkdir(parents=True, exist_ok=True)
            for i, audio in enumerate(as_judged(generated[:3])):
                soundfile.write(samples_dir / f"{split}-{task}-{i}.wav", audio, 16000)
        results[task] = {"examples": count, **score}
        if task == "tts":  # a generation task: `source` holds its corpus rows
            resynthesized, _ = speak(model, processor, examples, from_reference=True)
            results["tts_resynthesis"] = {"examples": count,
                                          **speech_scores(task, resynthesized, source, processor, judges)}
    return results


def speech_scores(task: str, generated: list, source, processor, judges: dict) -> dict:
    """SIM, no-speech rate, seconds and the judges' WER on generated speech (None items judged as silence) and on
    the reference audio of the same words (`source`: the corpus rows); for TTS also each judge's WER per voice
    (`by_voice`: {voice: {"<judge>_wer_generated", "<judge>_wer_reference"}})."""
    reference_audio = [item["array"] for item in source[get_task(task).answer_audio]]
    count = len(generated)
    score = {"sim": similarity(processor.speaker_encoder, generated, reference_audio),
             "no_speech": float(sum(g is None for g in generated) / count),
             "seconds_generated": float(sum(len(g) for g in generated if g is not None) / 16000)}
    if task != "t2st":
        used = judges if task == "tts" else {"whisper": judges["whisper"]}
        voices = source["speaker"] if task == "tts" else None
        for name, audio in (("generated", as_judged(generated)), ("reference", reference_audio)):
            judged = judge(source[get_task(task).answer_column], audio, 16000, judges=used, groups=voices)["judges"]
            for judge_name, value in judged.items():
                score[f"{judge_name}_wer_{name}"] = value["wer"]
                for voice, group in (value["groups"] or {}).items():
                    score.setdefault("by_voice", {}).setdefault(voice, {})[f"{judge_name}_wer_{name}"] = group["wer"]
    return score


def voice_table(results: dict) -> str:
    """Markdown: the judges' WER on generated speech / on the reference audio, per split, speech task row and voice
    (the rows scored with `by_voice`)."""
    lines = []
    for split, tasks in results["splits"].items():
        for task, score in tasks.items():
            for voice, wers in sorted(score.get("by_voice", {}).items()):
                judges = [key.removesuffix("_wer_generated") for key in wers if key.endswith("_wer_generated")]
                cells = [f"{100 * wers[f'{j}_wer_generated']:.1f}% / {100 * wers[f'{j}_wer_reference']:.1f}%"
                         for j in judges]
                if not lines:
                    lines = ["| split | row | voice | " + " | ".join(f"{j} (generated / reference)" for j in judges)
                             + " |", "|---|---|---|" + "---|" * len(judges)]
                lines.append(f"| {split} | {task.upper()} | {voice} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_report(results: dict) -> str:
    lines = [f"USTokens written with {results['speech_generation']}", ""] if "speech_generation" in results else []
    lines += ["| split | task | n | result |", "|---|---|---|---|"]
    for split, tasks in results["splits"].items():
        for task, score in tasks.items():
            shown = ", ".join(f"{k} {v:.3f}" for k, v in score.items() if isinstance(v, float))
            lines.append(f"| {split} | {task.upper()} | {score['examples']} | {shown} |")
    if by_voice := voice_table(results):
        lines += ["", "Per voice:", "", by_voice]
    return "\n".join(lines) + "\n"


def evaluate_model(folder: str | Path, corpus: str = "data/corpus", cache_dir: str = "data/encoder_cache",
                   whisper: str = "models/whisper-tiny.en", limits: dict | None = None,
                   output_dir: str | Path | None = None, speech_generation: dict | None = None,
                   semantic_codec: str | Path | None = None) -> dict:
    """Evaluate the model folder on both test splits; `limits`: {task: examples} of the tasks to score (default
    `DEFAULT_LIMITS`, all eight). Writes evaluation.json / .md and samples/ into `output_dir` (default: the model
    folder). `speech_generation`: GenerationConfig fields updating the saved `config.speech_generation` (e.g.
    `{"num_beams": 1}`); the results then go elsewhere (`output_dir`) and record the settings used.
    `semantic_codec`: a codec folder that decodes USTokens alone (`dualspeechlm-train-codec-decoder`), which renders
    the same written USTokens as the semantic-only comparison rows (`evaluate_split`)."""
    folder = Path(folder)
    if speech_generation and output_dir is None:
        raise ValueError("other speech_generation settings than the saved ones need an output_dir: the model folder's "
                         "evaluation.json describes the model as saved")
    output_dir = Path(output_dir) if output_dir is not None else folder
    output_dir.mkdir(parents=True, exist_ok=True)
    model = DualSpeechLMForConditionalGeneration.from_pretrained(folder).eval()
    model.config.speech_generation = {**model.config.speech_generation, **(speech_generation or {})}
    processor = DualSpeechLMProcessor.from_pretrained(folder)
    if semantic_codec is not None:
        semantic_codec = load_codec(str(semantic_codec)).eval()
        if not semantic_codec.decodes_ustokens_alone:
            raise ValueError("the semantic-only rows need a codec that decodes USTokens alone "
                             "(ustoken_decode_codebooks 0)")
    limits = limits or DEFAULT_LIMITS
    results = {"speech_generation": model.config.speech_generation, "splits": {}}
    judges = speech_judges(whisper, corpus)  # one model load for all tasks
    for split in tqdm(SPLITS, desc="evaluate", unit="split"):
        results["splits"][split] = evaluate_split(model, processor, corpus, cache_dir, split, judges, limits,
                                                  output_dir / "samples", semantic_codec)
    (output_dir / "evaluation.json").write_text(json.dumps(results, indent=2))
    (output_dir / "evaluation.md").write_text(markdown_report(results))
    print(markdown_report(results))
    return results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="models/dualspeechlm")
    parser.add_argument("--corpus", default="data/corpus")
    parser.add_argument("--cache-dir", default="data/encoder_cache")
    parser.add_argument("--whisper", default="models/whisper-tiny.en")
    parser.add_argument("--limit", type=int, default=None, help="examples per task and split (default: per task)")
    parser.add_argument("--tasks", nargs="+", choices=list(DEFAULT_LIMITS), default=list(DEFAULT_LIMITS),
                        help="the tasks to score (default: all eight)")
    parser.add_argument("--output-dir", default=None,
                        help="where evaluation.json / .md and samples/ go (default: the model folder)")
    parser.add_argument("--semantic-codec", default=None,
                        help="a codec folder that decodes USTokens alone: the same written USTokens rendered by it "
                             "are scored too, as the semantic-only rows")
    parser.add_argument("--speech-generation", nargs="+", default=[], metavar="FIELD=VALUE",
                        help="USToken writing other than the saved config's, e.g. num_beams=1 do_sample=true "
                             "(needs --output-dir)")
    args = parser.parse_args(argv)
    limits = {task: args.limit or count for task, count in DEFAULT_LIMITS.items() if task in args.tasks}
    settings = {}
    for item in args.speech_generation:
        name, equals, value = item.partition("=")
        if not equals or not name:
            parser.error(f"--speech-generation takes FIELD=VALUE items, got {item!r}")
        settings[name] = yaml.safe_load(value)
    if settings and args.output_dir is None:
        parser.error("--speech-generation needs --output-dir: the model folder's evaluation describes the model "
                     "as saved")
    evaluate_model(args.model, args.corpus, args.cache_dir, args.whisper, limits, args.output_dir, settings,
                   args.semantic_codec)


if __name__ == "__main__":
    main()
