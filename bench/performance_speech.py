"""The performance page's speech sections: ASR against Whisper tiny.en, TTS and VC generation, the USTokenizer and the
codec, each measured on the corpus' test audio with the main job's folders and returned as a plain dict.

`asr_speeds` is the ASR measurement itself (any transcribers); the `*_section` functions load the folders and call
it or the measurement functions of the `bench_*.py` scripts.
"""

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from transformers import pipeline

from bench.bench_codec import codec_speeds
from bench.bench_generation import speech_generation_speeds
from bench.bench_ustokenizer import ustokenizer_speeds
from bench.common import best_times, significant
from dualspeechlm.modeling_dualspeechlm import DualSpeechLMForConditionalGeneration
from dualspeechlm.modeling_mel_codec import MelCodecModel
from dualspeechlm.modeling_ustokenizer import USTokenizerModel
from dualspeechlm.processing.corpus import load_corpus
from dualspeechlm.processing_dualspeechlm import DualSpeechLMProcessor
from dualspeechlm.tasks import get_task
from dualspeechlm.training.codec_training import corpus_waveforms
from dualspeechlm.training.judge import WhisperJudge
from dualspeechlm.training.metrics import word_error_rate

SPLIT = "test"  # the corpus split every speech section reads (sentences no training split holds)
BATCHED = 8  # the batch size of the batched runs
SAMPLING_RATE = 16000  # the corpus' audio
CLIP_SECONDS = (2.0, 5.0, 10.0)  # the USTokenizer's clip lengths


class NotReadyError(RuntimeError):
    """A folder the measurement needs is not made yet (or not in the state it needs); the message names the make
    target that makes it."""


def asr_speeds(systems: dict[str, Callable[[list[np.ndarray], int], list[str]]], clips: list[np.ndarray],
               references: list[str], baseline: str, repeats: int, clock, batch_sizes: tuple[int, ...] = (1, BATCHED),
               sampling_rate: int = SAMPLING_RATE) -> dict:
    """Word error rate and speed of each ASR system at each batch size, on the same clips, interleaved best of
    `repeats` rounds (`best_times`).

    systems: {name: transcribe(clips, batch_size) -> one text per clip}; clips: mono `[samples]` arrays at
    `sampling_rate`; references: their words; baseline: the system the others are compared with.
    Returns `items`, `audio_seconds`, `baseline` and `runs`, one per (system, batch size): `system`, `batch_size`,
    `seconds`, `real_time_factor` (seconds / audio seconds), `wer` (`word_error_rate`, normalised text),
    `wer_vs_baseline` (wer / the baseline's at that batch size; None where the baseline's is 0),
    `speedup_over_baseline` (the baseline's seconds / seconds, same batch size) and `batching_speedup` (the
    system's seconds at the first batch size / seconds).
    """
    timed = {(name, size): (lambda transcribe=transcribe, size=size: transcribe(clips, size))
             for name, transcribe in systems.items() for size in batch_sizes}
    for name, size in timed:  # warm-up, which also loads whatever a system loads on first use
        systems[name](clips[:size], size)
    texts = {}
    best = best_times(timed, repeats, clock, texts)
    audio = sum(len(clip) for clip in clips) / sampling_rate
    wers = {key: word_error_rate(references, texts[key]) for key in timed}
    runs = [{"system": name, "batch_size": size, "seconds": best[name, size],
             "real_time_factor": best[name, size] / audio, "wer": wers[name, size],
             "wer_vs_baseline": wers[name, size] / wers[baseline, size] if wers[baseline, size] else None,
             "speedup_over_baseline": best[baseline, size] / best[name, size],
             "batching_speedup": best[name, batch_sizes[0]] / best[name, size]} for name, size in timed]
    return {"items": len(clips), "audio_seconds": audio, "baseline": baseline, "runs": runs}


def dualspeechlm_transcriber(model_dir: str | Path) -> Callable[[list[np.ndarray], int], list[str]]:
    """The model folder's ASR pipeline (`pipeline("automatic-speech-recognition", ...)`) as `asr_speeds` calls it:
    its own preprocessing, generation settings and decoding, on a left-padded batch of clips at a time."""
    asr = pipeline("automatic-speech-recognition", model=str(model_dir), trust_remote_code=True)

    def transcribe(clips: list[np.ndarray], batch_size: int) -> list[str]:
        texts = []
        for start in range(0, len(clips), batch_size):
            inputs = asr.preprocess(clips[start : start + batch_size], sampling_rate=SAMPLING_RATE)
            texts += asr.processor.decode_text(asr.forward(inputs)["tokens"])
        return texts

    return transcribe


def whisper_transcriber(whisper_dir: str | Path) -> Callable[[list[np.ndarray], int], list[str]]:
    """Whisper through transformers' ASR pipeline as the project's judge runs it (`WhisperJudge`: greedy, English,
    its length cap against hallucination loops), without its transcript cache."""
    judges = {}

    def transcribe(clips: list[np.ndarray], batch_size: int) -> list[str]:
        if batch_size not in judges:
            judges[batch_size] = WhisperJudge(whisper_dir, batch_size=batch_size, progress=False, cache_dir=False)
        return judges[batch_size].transcribe(clips, SAMPLING_RATE)

    return transcribe


def corpus_test_clips(corpus: str | Path, limit: int) -> tuple[list[np.ndarray], list[str]]:
    """(the first `limit` clips of the corpus' speech config, `SPLIT` split, as float32 `[samples]` arrays; their
    words)."""
    waveforms, texts, _ = corpus_waveforms(corpus, SPLIT, limit)
    return [waveform.numpy() for waveform in waveforms], texts


def asr_section(model: str, whisper: str, corpus: str, limit: int, repeats: int, clock) -> dict:
    """`asr_speeds` of the model folder's ASR pipeline against Whisper (the baseline) on the first `limit` test
    clips, at batch 1 and `BATCHED`."""
    clips, references = corpus_test_clips(corpus, limit)
    systems = {"DualSpeechLM": dualspeechlm_transcriber(model), "Whisper tiny.en": whisper_transcriber(whisper)}
    return asr_speeds(systems, clips, references, "Whisper tiny.en", repeats, clock)


def audio_column(rows, column: str) -> list[np.ndarray]:
    """The decoded audio of one column of corpus rows, float32 `[samples]` arrays."""
    return [np.asarray(item["array"], dtype=np.float32) for item in rows[column]]


def speaking_model(model_dir: str | Path) -> DualSpeechLMForConditionalGeneration:
    """The model folder's model, which must be able to speak: its codec renders the written USTokens alone, or its
    AcousticGPT was trained to write the codec's codes."""
    model = DualSpeechLMForConditionalGeneration.from_pretrained(model_dir).eval()
    codec = model.codec_model
    if codec is None or (not codec.decodes_ustokens_alone and model.config.acoustic_loss_weight == 0):
        raise NotReadyError(f"{model_dir} does not speak yet: its AcousticGPT is untrained and its codec needs "
                            "AcousticGPT's codes; `make evaluation` gives it the codec that renders the USTokens "
                            "alone (dualspeechlm-set-codec)")
    return model


def generation_section(task: str, model_dir: str, corpus: str, limit: int, repeats: int, clock) -> dict:
    """`speech_generation_speeds` of the model folder on the first `limit` `SPLIT` items of a generation task with
    at most one speech input (TTS, VC, T2ST): requests go through the folder's processor inside the timed calls
    (so VC's input speech is tokenized there), each item spoken in the voice of its reference recording (embedded
    beforehand, as a known voice is) with the model's saved way of writing USTokens."""
    spec = get_task(task)
    if not spec.speech_output or len(spec.input_audio) > 1:
        raise ValueError(f"{task} is not a generation task with at most one speech input")
    model, processor = speaking_model(model_dir), DualSpeechLMProcessor.from_pretrained(model_dir)
    rows = load_corpus(corpus, spec.corpus_config)[SPLIT]
    rows = rows.select(range(min(limit, len(rows))))
    voices = processor.speaker_embedding(audio_column(rows, spec.answer_audio), SAMPLING_RATE)
    fields = {name: list(rows[name]) for name in spec.prompt_fields}
    if spec.input_audio:
        fields["audio"] = audio_column(rows, spec.input_audio[0])

    def inputs_of(items: range) -> dict:
        picked = {name: values[items.start : items.stop] for name, values in fields.items()}
        rate = SAMPLING_RATE if "audio" in picked else None
        batch = processor(task=task, sampling_rate=rate, **picked)
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
                "condition_mask": batch["condition_mask"], "speaker_embeddings": voices[items.start : items.stop]}

    speeds = speech_generation_speeds(model, inputs_of, len(rows), BATCHED, repeats, clock, output_audio=True)
    return {"task": task, "speech_generation": model.config.speech_generation, **speeds}


def ustokenizer_section(ustokenizer: str, corpus: str, limit: int, repeats: int, clock) -> dict:
    """`ustokenizer_speeds` of the saved tokenizer, its clips cut from the first `limit` test clips end to end."""
    tokenizer = USTokenizerModel.from_pretrained(ustokenizer).eval()
    clips, _ = corpus_test_clips(corpus, limit)
    return ustokenizer_speeds(tokenizer, np.concatenate(clips), list(CLIP_SECONDS), BATCHED, repeats, clock)


def codec_section(codec: str, corpus: str, limit: int, repeats: int, clock) -> dict:
    """`codec_speeds` of the saved mel codec on the first `limit` test clips, in batches of `BATCHED`."""
    model = MelCodecModel.from_pretrained(codec).eval()
    clips, _ = corpus_test_clips(corpus, limit)
    return codec_speeds(model, [torch.from_numpy(clip) for clip in clips], BATCHED, repeats, clock)


def asr_table(speeds: dict) -> str:
    """Markdown of an `asr_speeds` result: one row per system and batch size, each figure beside its ratio."""
    baseline = speeds["baseline"]
    lines = [f"| system | batch | WER | WER vs {baseline} | real-time factor | speed-up over {baseline} | "
             "speed-up over one by one |", "|---|---|---|---|---|---|---|"]
    for run in speeds["runs"]:
        wer_ratio = "n/a" if run["wer_vs_baseline"] is None else f"{run['wer_vs_baseline']:.2f}x"
        lines.append(f"| {run['system']} | {run['batch_size']} | {run['wer']:.1%} | {wer_ratio} | "
                     f"{significant(run['real_time_factor'])} | {run['speedup_over_baseline']:.1f}x | "
                     f"{run['batching_speedup']:.1f}x |")
    return "\n".join(lines)
