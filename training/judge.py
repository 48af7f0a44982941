"""The speech judge: intelligibility of audio as the WER / CER of an independent ASR.

Two judges share one input check and one `transcribe(waveforms, sampling_rate) -> list[str]`:

* `WhisperJudge`: OpenAI Whisper (tiny.en, converted to a transformers folder), greedy decoding.
* `PocketsphinxJudge`: CMU pocketsphinx with the English models shipped in its wheel; a much
  weaker recogniser, but one that shares nothing with Whisper.

`judge()` scores references against every judge (overall and per group, e.g. per voice), and
`format_markdown_table()` renders the result. The CLI `dualspeechlm-judge` runs it on the corpus.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .metrics import char_error_rate, word_error_rate

JUDGE_SAMPLING_RATE = 16000  # both recognisers expect 16 kHz mono
DEFAULT_WHISPER = "models/whisper-tiny.en"


def prepare_waveforms(waveforms, sampling_rate) -> list[np.ndarray]:
    """Validate a batch of mono waveforms and return them as float32 arrays at 16 kHz.

    Raises ValueError for a non-list batch, a non-positive sampling rate, and for any waveform
    that is empty, not 1-D (e.g. stereo) or contains NaN / inf. Integer PCM is scaled to [-1, 1].
    """
    if isinstance(waveforms, np.ndarray) or not isinstance(waveforms, (list, tuple)):
        raise ValueError(f"waveforms must be a list of 1-D arrays, got {type(waveforms).__name__}")
    if isinstance(sampling_rate, bool) or not isinstance(sampling_rate, (int, np.integer)) or sampling_rate <= 0:
        raise ValueError(f"sampling_rate must be a positive integer (Hz), got {sampling_rate!r}")
    out = []
    for i, wave in enumerate(waveforms):
        wave = np.asarray(wave)
        if wave.ndim != 1:
            raise ValueError(f"waveform {i} has shape {wave.shape}: expected a 1-D mono array "
                             "(mix stereo down or pick one channel first)")
        if wave.size == 0:
            raise ValueError(f"waveform {i} is empty (0 samples)")
        if np.issubdtype(wave.dtype, np.integer):
            wave = wave / float(np.iinfo(wave.dtype).max + 1)
        elif not np.issubdtype(wave.dtype, np.floating):
            raise ValueError(f"waveform {i} has dtype {wave.dtype}: expected float or integer PCM")
        if not np.isfinite(wave).all():
            raise ValueError(f"waveform {i} contains NaN or inf samples")
        out.append(wave.astype(np.float32, copy=False))
    if sampling_rate != JUDGE_SAMPLING_RATE:
        import torch
        from torchaudio.functional import resample

        out = [resample(torch.from_numpy(w), int(sampling_rate), JUDGE_SAMPLING_RATE).numpy() for w in out]
    return out


class WhisperJudge:
    """Whisper through `transformers.pipeline("automatic-speech-recognition")` on CPU, greedy, English."""

    name = "whisper"

    def __init__(self, whisper_dir: str | os.PathLike = DEFAULT_WHISPER, batch_size: int = 8,
                 device: str = "cpu", progress: bool = True):
        from transformers import pipeline

        if not (Path(whisper_dir) / "config.json").is_file():
            raise FileNotFoundError(f"no Whisper model at {whisper_dir}: create it with "
                                    f"`dualspeechlm-convert-whisper --output-dir {whisper_dir}`")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.pipe = pipeline("automatic-speech-recognition", model=str(whisper_dir), device=device)
        self.batch_size, self.progress = batch_size, progress
        # English-only checkpoints (tiny.en) refuse a `language` argument; multilingual ones need it.
        self.generate_kwargs = {"num_beams": 1, "do_sample": False}
        if getattr(self.pipe.model.generation_config, "is_multilingual", False):
            self.generate_kwargs.update(language="en", task="transcribe")

    def transcribe(self, waveforms, sampling_rate: int) -> list[str]:
        """Transcribe each waveform; resamples to 16 kHz when needed."""
        waves = prepare_waveforms(waveforms, sampling_rate)
        texts = []
        with tqdm(total=len(waves), desc="whisper", unit="utt", disable=not self.progress) as bar:
            for start in range(0, len(waves), self.batch_size):
                batch = waves[start:start + self.batch_size]
                longest = max(len(w) for w in batch) / JUDGE_SAMPLING_RATE
                kwargs = dict(self.generate_kwargs)
                if longest <= 30:
                    # Speech runs at ~4 tokens/s; 10/s + 20 (prompt included) never cuts real speech
                    # but stops a hallucination loop on noise from running to the 448-token limit.
                    kwargs["max_length"] = min(448, 20 + math.ceil(10 * longest))
                # Over 30 s Whisper decodes long-form (window by window), which needs timestamps.
                outputs = self.pipe([{"raw": w, "sampling_rate": JUDGE_SAMPLING_RATE} for w in batch],
                                    batch_size=len(batch), return_timestamps=longest > 30 or None,
                                    generate_kwargs=kwargs)
                texts.extend(o["text"].strip() for o in outputs)
                bar.update(len(batch))
        return texts


_DECODER = None  # one pocketsphinx Decoder per process (the main one or a pool worker)


def _pocketsphinx_decode(pcm: bytes) -> str:
    """Decode one utterance of 16 kHz int16 little-endian PCM with this process' decoder."""
    global _DECODER
    if _DECODER is None:
        from pocketsphinx import Decoder

        _DECODER = Decoder(loglevel="ERROR")  # default: the en-us models shipped in the wheel
    else:
        # The decoder keeps state across utterances (reinit_feat / set_cmn do not clear it), so a
        # transcript would depend on what was decoded before it, i.e. on order and process count.
        # A full reinit (~0.4 s) makes every utterance decode as if by a fresh decoder.
        _DECODER.reinit()
    _DECODER.start_utt()
    _DECODER.process_raw(pcm, full_utt=True)
    _DECODER.end_utt()
    hyp = _DECODER.hyp()
    return hyp.hypstr if hyp is not None else ""


class PocketsphinxJudge:
    """CMU pocketsphinx (default en-us acoustic model, LM and dictionary from the wheel).

    The decoder is single-threaded; with `processes > 1` utterances are spread over a pool of
    worker processes, each with its own decoder. Small batches (< 2 per process) stay in-process,
    where starting the pool (a decoder load per worker, ~0.5 s) would cost more than it saves.
    """

    name = "pocketsphinx"

    def __init__(self, processes: int | None = None, progress: bool = True):
        self.processes = processes if processes is not None else min(2, os.cpu_count() or 1)
        self.progress = progress

    def transcribe(self, waveforms, sampling_rate: int) -> list[str]:
        """Transcribe each waveform; resamples to 16 kHz when needed."""
        waves = prepare_waveforms(waveforms, sampling_rate)
        pcms = [(np.clip(w, -1.0, 1.0) * 32767).astype("<i2").tobytes() for w in waves]
        bar = dict(total=len(pcms), desc="pocketsphinx", unit="utt", disable=not self.progress)
        if self.processes <= 1 or len(pcms) < 2 * self.processes:
            return [_pocketsphinx_decode(p) for p in tqdm(pcms, **bar)]
        # fork where available: spawn would re-import the caller's __main__ (and crash an unguarded
        # script). The children only run pocketsphinx, never the parent's torch thread pools.
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        with ProcessPoolExecutor(self.processes, mp_context=context) as pool:
            return list(tqdm(pool.map(_pocketsphinx_decode, pcms), **bar))


def _scores(references: list[str], hypotheses: list[str]) -> dict:
    return {"num_utterances": len(references), "wer": word_error_rate(references, hypotheses),
            "cer": char_error_rate(references, hypotheses)}


def judge(references: list[str], waveforms, sampling_rate: int, judges=None,
          groups: list[str] | None = None) -> dict:
    """Transcribe `waveforms` with each judge and score them against `references`.

    `judges` is a dict name -> judge, or a list of judge objects (named by their `name`); any object
    with `transcribe(waveforms, sampling_rate) -> list[str]` works. None builds Whisper (from
    `models/whisper-tiny.en`) and pocketsphinx. `groups` (e.g. the voice of each utterance) adds
    per-group scores. Returns `{"num_utterances", "references", "groups", "judges": {name: {"wer",
    "cer", "num_utterances", "seconds", "seconds_per_utterance", "groups": {group: {"wer", "cer",
    "num_utterances"}}, "hypotheses"}}}`; WER / CER are corpus-level fractions (0.1 = 10 %).
    """
    references = list(references)
    if len(references) != len(waveforms):
        raise ValueError(f"{len(references)} references but {len(waveforms)} waveforms")
    if groups is not None and len(groups) != len(references):
        raise ValueError(f"{len(groups)} groups but {len(references)} references")
    waves = prepare_waveforms(waveforms, sampling_rate)  # check and resample once for all judges
    if judges is None:
        judges = [WhisperJudge(DEFAULT_WHISPER), PocketsphinxJudge()]
    if not isinstance(judges, dict):
        judges = {j.name: j for j in judges}
    result = {"num_utterances": len(references), "references": references,
              "groups": None if groups is None else list(groups), "judges": {}}
    for name, asr in judges.items():
        started = time.perf_counter()
        hypotheses = list(asr.transcribe(waves, JUDGE_SAMPLING_RATE))
        seconds = time.perf_counter() - started
        entry = _scores(references, hypotheses)
        entry.update(seconds=seconds, seconds_per_utterance=seconds / max(1, len(references)), groups={})
        for group in sorted(set(groups or [])):
            idx = [i for i, g in enumerate(groups) if g == group]
            entry["groups"][group] = _scores([references[i] for i in idx], [hypotheses[i] for i in idx])
        entry["hypotheses"] = hypotheses
        result["judges"][name] = entry
    return result


def format_markdown_table(result: dict) -> str:
    """A Markdown table: one row per group plus "all", WER and CER (in %) per judge."""
    names = list(result["judges"])
    header = ["group", "utterances"] + [f"{n} {m}" for n in names for m in ("WER", "CER")]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    first = result["judges"][names[0]] if names else {"groups": {}}
    for group in [*first["groups"], "all"]:
        cells = [group, str(first["groups"][group]["num_utterances"] if group != "all"
                            else result["num_utterances"])]
        for n in names:
            scores = result["judges"][n] if group == "all" else result["judges"][n]["groups"][group]
            cells += [f"{100 * scores['wer']:.1f}%", f"{100 * scores['cer']:.1f}%"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _load_split(dataset, limit: int | None):
    """References, 16 kHz mono waveforms and speakers of a corpus split (first `limit` rows)."""
    if limit is not None:
        dataset = dataset.select(range(min(limit, len(dataset))))
    texts, waves, speakers = [], [], []
    for row in dataset:
        samples = row["audio"].get_all_samples()  # datasets 5: a torchcodec AudioDecoder
        data = samples.data.numpy()
        waves.extend(prepare_waveforms([data.mean(axis=0)], int(samples.sample_rate)))
        texts.append(row["text"])
        speakers.append(row["speaker"])
    return texts, waves, speakers


def main(argv=None) -> int:
    """CLI `dualspeechlm-judge`: score the corpus audio itself (the intelligibility baseline)."""
    parser = argparse.ArgumentParser(prog="dualspeechlm-judge", description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="data/corpus", help="built corpus folder")
    parser.add_argument("--config", default="speech", help="corpus config holding the audio")
    parser.add_argument("--splits", nargs="+", default=["test", "test_unseen_voice"])
    parser.add_argument("--whisper", default=DEFAULT_WHISPER, help="converted Whisper folder")
    parser.add_argument("--judges", nargs="+", default=["whisper", "pocketsphinx"],
                        choices=["whisper", "pocketsphinx"])
    parser.add_argument("--limit", type=int, default=None, help="first N utterances per split")
    parser.add_argument("--batch-size", type=int, default=8, help="Whisper batch size")
    parser.add_argument("--output-dir", default="results/judge_baseline")
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error(f"--limit must be at least 1, got {args.limit}")
    from dualspeechlm.processing.corpus import load_corpus

    corpus = load_corpus(args.corpus, args.config)
    missing = [split for split in args.splits if split not in corpus]
    if missing:
        parser.error(f"corpus {args.corpus} ({args.config}) has no split {missing}; it has {list(corpus)}")
    judges = {}
    for name in args.judges:
        judges[name] = (WhisperJudge(args.whisper, batch_size=args.batch_size) if name == "whisper"
                        else PocketsphinxJudge())
    report = {"corpus": str(args.corpus), "config": args.config, "whisper": str(args.whisper),
              "limit": args.limit, "splits": {}}
    markdown = [f"# Judge baseline: `{args.corpus}` ({args.config})", "",
                "WER / CER of each ASR judge on the corpus audio against its text, per voice."]
    for split in args.splits:
        texts, waves, speakers = _load_split(corpus[split], args.limit)
        result = judge(texts, waves, JUDGE_SAMPLING_RATE, judges=judges, groups=speakers)
        report["splits"][split] = result
        table = format_markdown_table(result)
        speed = ", ".join(f"{n} {r['seconds_per_utterance']:.2f} s/utt" for n, r in result["judges"].items())
        markdown += ["", f"## {split} ({len(texts)} utterances; {speed})", "", table]
        print(f"\n## {split}\n\n{table}\n", flush=True)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "baseline.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "baseline.md").write_text("\n".join(markdown) + "\n")
    print(f"wrote {out / 'baseline.json'} and {out / 'baseline.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
