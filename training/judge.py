"""The speech judge: intelligibility of audio as the WER / CER of an independent ASR.

Two judges share one input check and one `transcribe(waveforms, sampling_rate) -> list[str]`:

* `WhisperJudge`: OpenAI Whisper (tiny.en, converted to a transformers folder), greedy decoding.
* `PocketsphinxJudge`: CMU pocketsphinx with the English acoustic model shipped in its wheel; a much
  weaker recogniser, but one that shares nothing with Whisper. With its generic English language model it
  hears the corpus' small vocabulary poorly; given a trigram model of the corpus' training sentences
  (`corpus_language_model`; never validation or test text) it judges the acoustics instead
  (`pocketsphinx_lm` in `speech_judges`), and the generic one's numbers stay beside it for comparison.

Transcripts are kept in a `TranscriptCache` on disk: the pipeline judges the same reference audio
with the same judges several times (the baseline, stage 1, the codec and stage 3's evaluations).

`judge()` scores references against every judge (overall and per group, e.g. per voice), and
`format_markdown_table()` renders the result. The CLI `dualspeechlm-judge` runs it on the corpus.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import importlib.metadata
import json
import math
import multiprocessing
import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .metrics import char_error_rate, normalize_text, word_error_rate

JUDGE_SAMPLING_RATE = 16000  # both recognisers expect 16 kHz mono
DEFAULT_WHISPER = "models/whisper-tiny.en"
# Part of every judge's cache identity: bump it when a judge's own code (decoding settings, post-processing)
# changes what it transcribes, so that transcripts made by the old code are not reused.
TRANSCRIPT_REVISION = 1


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


def default_cache_dir() -> Path:
    """`$DUALSPEECHLM_JUDGE_CACHE`, else `dualspeechlm/judge` in the user's cache folder (where the HF caches live)."""
    if os.environ.get("DUALSPEECHLM_JUDGE_CACHE"):
        return Path(os.environ["DUALSPEECHLM_JUDGE_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "dualspeechlm" / "judge"


class TranscriptCache:
    """One judge's transcripts on disk, keyed by the sha1 of the 16 kHz float32 audio, so each audio is
    transcribed once per machine however many stages judge it.

    A JSON-lines file per judge identity (`{name}-{hash of identity}.jsonl` in `directory`). Each store appends
    whole lines in one `write` to an `O_APPEND` file, so stages running in parallel (`make -j2`) never interleave;
    readers skip a line that does not parse: one torn by a writer killed mid-write, and the line appended next,
    glued to it (a transcript computed again, never a wrong one).
    """

    def __init__(self, directory: str | os.PathLike, name: str, identity: dict):
        canonical = json.dumps({"revision": TRANSCRIPT_REVISION, **identity}, sort_keys=True).encode()
        self.path = Path(directory) / f"{name}-{hashlib.sha1(canonical).hexdigest()[:16]}.jsonl"

    @staticmethod
    def key(wave: np.ndarray) -> str:
        """The audio's key: sha1 of a waveform from `prepare_waveforms` (16 kHz float32)."""
        return hashlib.sha1(wave.tobytes()).hexdigest()

    def get(self, keys: list[str]) -> list[str | None]:
        """The stored transcript of each key, None where there is none."""
        known = {}
        if self.path.is_file():
            for line in self.path.read_bytes().decode("utf-8", errors="replace").split("\n"):
                try:
                    entry = json.loads(line)
                    known[entry["audio"]] = entry["text"]
                except (ValueError, KeyError, TypeError):  # a torn line (or the empty one after the last)
                    continue
        return [known.get(k) for k in keys]

    def put(self, keys: list[str], texts: list[str]) -> None:
        """Append transcripts; a failed write (read-only or full disk) warns: the judge's result is still good."""
        lines = "".join(json.dumps({"audio": k, "text": t}) + "\n" for k, t in zip(keys, texts)).encode()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, lines)
            finally:
                os.close(fd)
        except OSError as err:
            warnings.warn(f"transcripts not cached in {self.path}: {err}")


class _CachedJudge:
    """What both judges share: the input checks, and `transcribe` through the cache, which decodes only the audio
    it lacks and stores each batch as it finishes (an interrupted run keeps what it did).

    A subclass sets `name` and `progress`, builds the `identity` of its transcripts (what changes them), calls
    `_open_cache(cache_dir)` and defines `_decode(waves)`: yield the transcripts of 16 kHz float32 `waves`, in
    order, one list per finished batch.
    """

    name: str
    identity: dict
    progress: bool
    cached_in_last_call: int = 0  # transcripts the last `transcribe` read from the cache (judge() reports it)

    def _open_cache(self, cache_dir: str | os.PathLike | bool | None) -> None:
        """`cache_dir` None: `default_cache_dir()`; False: no cache."""
        self.cache = None if cache_dir is False else TranscriptCache(
            default_cache_dir() if cache_dir is None else cache_dir, self.name, self.identity)

    def transcribe(self, waveforms, sampling_rate: int) -> list[str]:
        """Transcribe each waveform; resamples to 16 kHz when needed."""
        waves = prepare_waveforms(waveforms, sampling_rate)
        keys = [TranscriptCache.key(w) for w in waves] if self.cache else []
        texts = self.cache.get(keys) if self.cache else [None] * len(waves)
        todo = [i for i, text in enumerate(texts) if text is None]
        cached = self.cached_in_last_call = len(waves) - len(todo)
        desc = f"{self.name} ({cached} cached)" if cached else self.name
        with tqdm(total=len(waves), initial=cached, desc=desc, unit="utt", disable=not self.progress) as bar:
            done = 0
            for batch in self._decode([waves[i] for i in todo]):
                indices, done = todo[done:done + len(batch)], done + len(batch)
                for i, text in zip(indices, batch):
                    texts[i] = text
                if self.cache:
                    self.cache.put([keys[i] for i in indices], batch)
                bar.update(len(batch))
        return texts


class WhisperJudge(_CachedJudge):
    """Whisper through `transformers.pipeline("automatic-speech-recognition")` on CPU, greedy, English.

    Its transcripts are cached under the checkpoint's weight files, generation settings, device and transformers
    version. The model is loaded on the first audio the cache lacks: a judge whose transcripts are all cached
    never loads it.
    """

    name = "whisper"

    def __init__(self, whisper_dir: str | os.PathLike = DEFAULT_WHISPER, batch_size: int = 8,
                 device: str = "cpu", progress: bool = True, cache_dir: str | os.PathLike | bool | None = None):
        import torch
        import transformers

        self.whisper_dir = Path(whisper_dir)
        weight_files = sorted(self.whisper_dir.glob("*.safetensors")) or sorted(self.whisper_dir.glob("*.bin"))
        if not (self.whisper_dir / "config.json").is_file() or not weight_files:
            raise FileNotFoundError(f"no Whisper model at {whisper_dir}: create it with "
                                    f"`dualspeechlm-convert-whisper --output-dir {whisper_dir}`")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.batch_size, self.device, self.progress = batch_size, device, progress
        generation_config = transformers.GenerationConfig.from_pretrained(self.whisper_dir)
        # English-only checkpoints (tiny.en) refuse a `language` argument; multilingual ones need it.
        self.generate_kwargs = {"num_beams": 1, "do_sample": False}
        if getattr(generation_config, "is_multilingual", False):
            self.generate_kwargs.update(language="en", task="transcribe")
        # The identity says nothing about the batch, although `_decode`'s max_length cap depends on the longest
        # clip in it: the cap never cuts real speech, so a speech transcript is the same in any batch; only the
        # length of a hallucination loop on non-speech can differ, and the cache keeps the first one computed.
        # (A clip over 30 s switches its whole batch to long-form decoding, which the key ignores likewise.)
        weights = hashlib.sha256()
        for path in weight_files:
            with open(path, "rb") as file:
                weights.update(path.name.encode() + hashlib.file_digest(file, "sha256").digest())
        self.identity = {"weights": weights.hexdigest()[:16], "device": torch.device(device).type,
                         "generation_config": generation_config.to_dict(),
                         "generate_kwargs": self.generate_kwargs, "transformers": transformers.__version__}
        self._open_cache(cache_dir)

    @functools.cached_property
    def pipe(self):
        """The transformers ASR pipeline, loaded on first use."""
        import transformers

        return transformers.pipeline("automatic-speech-recognition", model=str(self.whisper_dir), device=self.device)

    def _decode(self, waves):
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
            yield [o["text"].strip() for o in outputs]


_DECODERS = {}  # pocketsphinx Decoders of this process (the main one or a pool worker), by language model


def _pocketsphinx_decode(pcm: bytes, language_model: str | None = None) -> str:
    """Decode one utterance of 16 kHz int16 little-endian PCM with this process' decoder for `language_model`
    (an ARPA file; None: the generic en-us model shipped in the wheel)."""
    decoder = _DECODERS.get(language_model)
    if decoder is None:
        from pocketsphinx import Decoder

        options = {"lm": language_model} if language_model else {}
        decoder = _DECODERS[language_model] = Decoder(loglevel="ERROR", **options)
    else:
        # The decoder keeps state across utterances (reinit_feat / set_cmn do not clear it), so a
        # transcript would depend on what was decoded before it, i.e. on order and process count.
        # A full reinit (~0.4 s) makes every utterance decode as if by a fresh decoder.
        decoder.reinit()
    decoder.start_utt()
    decoder.process_raw(pcm, full_utt=True)
    decoder.end_utt()
    hyp = decoder.hyp()
    return hyp.hypstr if hyp is not None else ""


def build_language_model(sentences: list[str], path: str | os.PathLike) -> Path:
    """A trigram language model (ARPA, Katz back-off) of `sentences`, normalized as the WER normalizes them,
    written to `path`; built with the estimator pocketsphinx ships (`pocketsphinx.lm.ArpaBoLM`)."""
    from pocketsphinx.lm import ArpaBoLM

    lines = [line for line in (normalize_text(s) for s in sentences) if line]
    if not lines:
        raise ValueError("a language model needs at least one non-empty sentence")
    model = ArpaBoLM(text="\n".join(lines) + "\n", add_start=True)
    model.compute()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + f".{os.getpid()}.partial")
    model.write_file(str(partial))
    partial.replace(path)  # parallel stages never read half a file
    return path


def corpus_language_model(corpus: str | os.PathLike, cache_dir: str | os.PathLike | bool | None = None) -> Path:
    """The language model of the corpus' training sentences (`training_sentences`), built once and kept under
    the judges' cache folder, named by the sentences' hash (`cache_dir` as the judges take it)."""
    sentences = training_sentences(corpus)
    digest = hashlib.sha1("\n".join(sentences).encode()).hexdigest()[:16]
    if cache_dir is False:
        import tempfile

        cache_dir = tempfile.mkdtemp(prefix="dualspeechlm-lm-")
    path = Path(default_cache_dir() if cache_dir is None else cache_dir) / f"pocketsphinx-lm-{digest}.arpa"
    return path if path.is_file() else build_language_model(sentences, path)


def training_sentences(corpus: str | os.PathLike) -> list[str]:
    """Every English sentence of the corpus' `train` splits, in order and once each: the spoken texts, the
    translations' English side, the passages (sentence by sentence), questions and answers. Never a validation
    or test text."""
    from dualspeechlm.processing.corpus import load_corpus

    columns = {"speech": ["text"], "style": ["text"], "vc": ["text"], "translation": ["text"],
               "qa": ["passage", "question", "answer"]}
    sentences = []
    for config, names in columns.items():
        train = load_corpus(corpus, config)["train"]
        for name in names:
            for text in train[name]:
                sentences += [part.strip() for part in text.split(".") if part.strip()]
    return list(dict.fromkeys(sentences))


class PocketsphinxJudge(_CachedJudge):
    """CMU pocketsphinx (default en-us acoustic model, LM and dictionary from the wheel).

    The decoder is single-threaded; with `processes > 1` utterances are spread over a pool of
    worker processes, each with its own decoder. Small batches (< 2 per process) stay in-process,
    where starting the pool (a decoder load per worker, ~0.5 s) would cost more than it saves.
    `language_model`: an ARPA file to decode with instead of the generic one (`corpus_language_model`); the
    judge is then named `pocketsphinx_lm`. Transcripts are cached under the pocketsphinx version, its default
    settings (model paths included) and the language model's content.
    """

    name = "pocketsphinx"

    def __init__(self, processes: int | None = None, progress: bool = True,
                 cache_dir: str | os.PathLike | bool | None = None, language_model: str | os.PathLike | None = None):
        from pocketsphinx import Config

        self.processes = processes if processes is not None else min(2, os.cpu_count() or 1)
        self.progress = progress
        self.language_model = None if language_model is None else str(language_model)
        settings = {k: v for k, v in Config().items() if k != "loglevel"}  # what `_pocketsphinx_decode` runs
        self.identity = {"pocketsphinx": importlib.metadata.version("pocketsphinx"), "settings": settings}
        if self.language_model is not None:
            if not Path(self.language_model).is_file():
                raise FileNotFoundError(f"no language model at {self.language_model}")
            self.name = "pocketsphinx_lm"
            self.identity["language_model"] = hashlib.sha1(Path(self.language_model).read_bytes()).hexdigest()
        self._open_cache(cache_dir)

    def _decode(self, waves):
        pcms = [(np.clip(w, -1.0, 1.0) * 32767).astype("<i2").tobytes() for w in waves]
        decode = functools.partial(_pocketsphinx_decode, language_model=self.language_model)
        if self.processes <= 1 or len(pcms) < 2 * self.processes:
            for pcm in pcms:
                yield [decode(pcm)]
            return
        # fork where available: spawn would re-import the caller's __main__ (and crash an unguarded
        # script). The children only run pocketsphinx, never the parent's torch thread pools.
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        with ProcessPoolExecutor(self.processes, mp_context=context) as pool:
            for text in pool.map(decode, pcms):
                yield [text]


JUDGES = ("whisper", "pocketsphinx", "pocketsphinx_lm")


def speech_judges(whisper: str | os.PathLike = DEFAULT_WHISPER, corpus: str | os.PathLike | None = None,
                  cache_dir: str | os.PathLike | bool | None = None, batch_size: int = 8,
                  names: tuple[str, ...] = JUDGES) -> dict:
    """The judges every speech result of the project is read by (those of `names`): Whisper, pocketsphinx with
    its generic English model and, given the corpus, pocketsphinx with the corpus' training-sentence language
    model."""
    unknown = set(names) - set(JUDGES)
    if unknown:
        raise ValueError(f"unknown judges {sorted(unknown)}; choose from {JUDGES}")
    judges = {}
    if "whisper" in names:
        judges["whisper"] = WhisperJudge(whisper, batch_size=batch_size, cache_dir=cache_dir)
    if "pocketsphinx" in names:
        judges["pocketsphinx"] = PocketsphinxJudge(cache_dir=cache_dir)
    if "pocketsphinx_lm" in names and corpus is not None:
        judges["pocketsphinx_lm"] = PocketsphinxJudge(
            cache_dir=cache_dir, language_model=corpus_language_model(corpus, cache_dir))
    return judges


def _scores(references: list[str], hypotheses: list[str]) -> dict:
    return {"num_utterances": len(references), "wer": word_error_rate(references, hypotheses),
            "cer": char_error_rate(references, hypotheses)}


def _group_scores(references: list[str], hypotheses: list[str], groups: list[str] | None) -> dict:
    scores = {}
    for group in sorted(set(groups or [])):
        idx = [i for i, g in enumerate(groups) if g == group]
        scores[group] = _scores([references[i] for i in idx], [hypotheses[i] for i in idx])
    return scores


def regrouped(result: dict, groups: list[str]) -> dict:
    """`result` (of `judge`) scored by other groups of the same utterances (e.g. engine instead of voice)."""
    if len(groups) != result["num_utterances"]:
        raise ValueError(f"{len(groups)} groups but {result['num_utterances']} utterances")
    judges = {name: {**entry, "groups": _group_scores(result["references"], entry["hypotheses"], groups)}
              for name, entry in result["judges"].items()}
    return {**result, "groups": list(groups), "judges": judges}


def judge(references: list[str], waveforms, sampling_rate: int, judges=None,
          groups: list[str] | None = None) -> dict:
    """Transcribe `waveforms` with each judge and score them against `references`.

    `judges` is a dict name -> judge, or a list of judge objects (named by their `name`); any object
    with `transcribe(waveforms, sampling_rate) -> list[str]` works. None builds Whisper (from
    `models/whisper-tiny.en`) and pocketsphinx. `groups` (e.g. the voice of each utterance) adds
    per-group scores. Returns `{"num_utterances", "references", "groups", "judges": {name: {"wer",
    "cer", "num_utterances", "seconds", "cached", "seconds_per_utterance", "groups": {group: {"wer", "cer",
    "num_utterances"}}, "hypotheses"}}}`; WER / CER are corpus-level fractions (0.1 = 10 %); `cached` counts the
    transcripts read from the judge's cache, `seconds_per_utterance` is over the others (None when all were cached).
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
        cached = getattr(asr, "cached_in_last_call", 0)
        entry = _scores(references, hypotheses)
        # per transcribed utterance: a cached transcript costs nothing and would make the judge look fast
        transcribed = len(references) - cached
        entry.update(seconds=seconds, cached=cached, groups=_group_scores(references, hypotheses, groups),
                     seconds_per_utterance=seconds / transcribed if transcribed else None)
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


def _voice_engines(corpus: str | os.PathLike) -> dict[str, str]:
    """The engine of each voice of a built corpus, from its manifest."""
    manifest = json.loads((Path(corpus) / "manifest.json").read_text())
    voices = manifest["voices"]
    every = [*voices["train"], *voices.get("style", []), voices["unseen"],
             *(v for vs in voices["translation"].values() for v in vs)]
    return {voice["name"]: voice["engine"] for voice in every}


def main(argv=None) -> int:
    """CLI `dualspeechlm-judge`: score the corpus audio itself (the intelligibility baseline)."""
    parser = argparse.ArgumentParser(prog="dualspeechlm-judge", description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="data/corpus", help="built corpus folder")
    parser.add_argument("--config", default="speech", help="corpus config holding the audio")
    parser.add_argument("--splits", nargs="+", default=["test", "test_unseen_voice"])
    parser.add_argument("--whisper", default=DEFAULT_WHISPER, help="converted Whisper folder")
    parser.add_argument("--judges", nargs="+", default=list(JUDGES), choices=JUDGES,
                        help="pocketsphinx_lm: pocketsphinx with a language model of the corpus' training sentences")
    parser.add_argument("--limit", type=int, default=None, help="first N utterances per split")
    parser.add_argument("--batch-size", type=int, default=8, help="Whisper batch size")
    parser.add_argument("--output-dir", default="results/judge_baseline")
    cache = parser.add_mutually_exclusive_group()
    cache.add_argument("--cache-dir", default=None, help="transcript cache folder (default: "
                       "$DUALSPEECHLM_JUDGE_CACHE, else ~/.cache/dualspeechlm/judge)")
    cache.add_argument("--no-cache", action="store_true", help="transcribe everything, read and store no cache")
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error(f"--limit must be at least 1, got {args.limit}")
    from dualspeechlm.processing.corpus import load_corpus

    corpus = load_corpus(args.corpus, args.config)
    engines = _voice_engines(args.corpus)
    missing = [split for split in args.splits if split not in corpus]
    if missing:
        parser.error(f"corpus {args.corpus} ({args.config}) has no split {missing}; it has {list(corpus)}")
    cache_dir = False if args.no_cache else args.cache_dir
    judges = speech_judges(args.whisper, args.corpus, cache_dir, args.batch_size, tuple(args.judges))
    report = {"corpus": str(args.corpus), "config": args.config, "whisper": str(args.whisper),
              "limit": args.limit, "splits": {}}
    markdown = [f"# Judge baseline: `{args.corpus}` ({args.config})", "",
                "WER / CER of each ASR judge on the corpus audio against its text, per voice."]
    for split in args.splits:
        texts, waves, speakers = _load_split(corpus[split], args.limit)
        result = judge(texts, waves, JUDGE_SAMPLING_RATE, judges=judges, groups=speakers)
        by_engine = regrouped(result, [engines.get(speaker, "unknown") for speaker in speakers])
        report["splits"][split] = {**result, "engines": {name: entry["groups"]
                                                         for name, entry in by_engine["judges"].items()}}
        table = format_markdown_table(result) + "\n\nPer engine:\n\n" + format_markdown_table(by_engine)
        speed = ", ".join(f"{n} {r['seconds_per_utterance']:.2f} s/utt" if r["seconds_per_utterance"] is not None
                          else f"{n} all cached" for n, r in result["judges"].items())
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
