"""The frozen Whisper encoder's outputs, computed once per corpus split and kept on disk.

The USTokenizer's encoder is frozen, so every training epoch would recompute the same 50 Hz
features; a cache turns training into running only the small parts. A cached split is the corpus
split without its audio plus `encoder_hidden_states` (`[frames_50hz, d_model]` flattened row-major,
float16, Arrow on disk, memory-mapped) and `num_frames`, saved with `save_to_disk` and reused while the corpus
manifest and the encoder weights are unchanged. The stages fill it as they need it; `dualspeechlm-cache-encoder`
(`main`) fills it ahead of them.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path

import datasets
import numpy as np
import torch
from tqdm.auto import tqdm

from dualspeechlm.feature_extraction_ustokenizer import USTokenizerFeatureExtractor
from dualspeechlm.modeling_ustokenizer import RealLengthWhisperEncoder
from dualspeechlm.processing.corpus import corpus_folder, load_corpus
from dualspeechlm.processing.corpus.builder import AUDIO_COLUMNS, SPLITS

CACHE_INFO = "cache_info.json"
SORTED_BATCHES = 32  # the audio is decoded this many batches at a time and sorted by length within them


def weights_fingerprint(model: torch.nn.Module) -> str:
    """A short hash of a model's weights: a different checkpoint never reuses a cache."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes()[:4096])
    return digest.hexdigest()[:16]


def codes_fingerprint(codec) -> str:
    """`weights_fingerprint` of the codec's encoding modules: a new decoder keeps the codes, and their caches."""
    return weights_fingerprint(torch.nn.ModuleList(codec.encoding_modules()))


def corpus_identity(corpus_dir: str | Path) -> dict:
    """What makes a corpus' content (a folder or Hub id): its generator version, seed and sizes (manifest.json)."""
    manifest = json.loads((corpus_folder(corpus_dir) / "manifest.json").read_text())
    return {"corpus_generator": manifest.get("generator_version"), "corpus_seed": manifest.get("seed"),
            "corpus_sizes": manifest.get("sizes")}


def built_from(path: Path, info: dict) -> bool:
    """Whether the cache at `path` was built from the same `info` (JSON-comparable)."""
    info_file = path / CACHE_INFO
    return info_file.is_file() and json.loads(info_file.read_text()) == json.loads(json.dumps(info))


def read_cache(path: Path, info: dict) -> datasets.Dataset | None:
    """The dataset saved at `path` when it was built from the same `info`, else None."""
    return datasets.load_from_disk(str(path)) if built_from(path, info) else None


def write_cache(path: Path, dataset: datasets.Dataset, info: dict) -> datasets.Dataset:
    """Save `dataset` at `path` with the `info` that `read_cache` checks; returns it memory-mapped from disk.

    The folder is written beside `path` and renamed into place, so processes that fill one cache side by side never
    read a half-written folder: the first to finish wins and the others read its copy."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}.partial")
    dataset.save_to_disk(str(staging))
    (staging / CACHE_INFO).write_text(json.dumps(info, indent=2))
    if not built_from(path, info):
        shutil.rmtree(path, ignore_errors=True)  # a cache of other inputs
        with contextlib.suppress(OSError):  # another process renamed its copy into place meanwhile
            staging.rename(path)
    shutil.rmtree(staging, ignore_errors=True)
    return datasets.load_from_disk(str(path))


def feature_settings(features: dict) -> dict:
    """What changes the log-mel (not bookkeeping such as `auto_map`, which differs between a fresh
    and a loaded feature extractor)."""
    return {k: features.get(k) for k in ("feature_size", "sampling_rate", "hop_length", "n_fft", "padding_value",
                                         "dither", "min_duration_s", "max_duration_s")}


@torch.no_grad()
def encode_batch(encoder: RealLengthWhisperEncoder, feature_extractor: USTokenizerFeatureExtractor,
                 waveforms: list[np.ndarray]) -> list[np.ndarray]:
    """Waveforms (16 kHz mono) -> encoder outputs `[frames_50hz, d_model]` float16, one per item."""
    features = feature_extractor(waveforms, sampling_rate=feature_extractor.sampling_rate, return_tensors="pt")
    hidden = encoder(features.input_features, features.attention_mask).last_hidden_state
    lengths = encoder.output_lengths(features.attention_mask.sum(-1))
    return [hidden[i, :length].to(torch.float16).numpy() for i, length in enumerate(lengths.tolist())]


def encode_sorted(encoder: RealLengthWhisperEncoder, feature_extractor: USTokenizerFeatureExtractor,
                  waveforms: list[np.ndarray], batch_size: int) -> list[np.ndarray]:
    """`encode_batch` over batches of like length (little padding: the encoder is masked, so a batch's company
    changes nothing but the time); the outputs come back in the order of `waveforms`."""
    order = sorted(range(len(waveforms)), key=lambda i: len(waveforms[i]))
    states = [None] * len(waveforms)
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        for i, state in zip(batch, encode_batch(encoder, feature_extractor, [waveforms[i] for i in batch])):
            states[i] = state
    return states


def cached_encoder_outputs(corpus_dir: str | Path, config: str, split: str, encoder: RealLengthWhisperEncoder,
                           feature_extractor: USTokenizerFeatureExtractor, cache_dir: str | Path,
                           batch_size: int = 16, column: str = "audio") -> datasets.Dataset:
    """The corpus `config`/`split` with `encoder_hidden_states` and `num_frames` (of its audio
    `column`) in place of its audio columns, from `cache_dir` when a matching cache exists there."""
    name = f"{config}-{split}" if column == "audio" else f"{config}-{split}-{column}"
    path = Path(cache_dir) / name
    info = {**corpus_identity(corpus_dir), "encoder": weights_fingerprint(encoder),
            "features": feature_settings(feature_extractor.to_dict())}
    if (cached := read_cache(path, info)) is not None:
        return cached

    source = load_corpus(corpus_dir, config)[split]
    audio = source.select_columns([column])
    rows = source.remove_columns(list(AUDIO_COLUMNS[config]))
    encoder.eval()
    states = []
    chunk = batch_size * SORTED_BATCHES
    with tqdm(total=len(source), desc=f"encoder cache {name}", unit="utt") as progress:
        for start in range(0, len(source), chunk):
            waveforms = [item["array"] for item in audio[start : start + chunk][column]]
            states.extend(encode_sorted(encoder, feature_extractor, waveforms, batch_size))
            progress.update(len(waveforms))
    # flattened: Arrow builds 1-D float16 lists straight from numpy, and they read back as one array
    flat = datasets.List(datasets.Value("float16"))
    dataset = rows.add_column("encoder_hidden_states", [s.ravel() for s in states], feature=flat)
    dataset = dataset.add_column("num_frames", [len(s) for s in states])
    return write_cache(path, dataset, info)


def main(argv=None) -> None:
    """`dualspeechlm-cache-encoder`: fill the encoder cache ahead of the stages that read it. The main job runs it
    for stage 1's audio beside the text LLM's training, so stage 1 starts with its features ready."""
    parser = argparse.ArgumentParser(description="Fill the Whisper encoder cache of a corpus ahead of training.")
    parser.add_argument("--corpus", default="data/corpus", help="a corpus folder or Hub dataset id")
    parser.add_argument("--whisper", default="models/whisper-tiny.en",
                        help="the Whisper checkpoint whose encoder runs")
    parser.add_argument("--cache-dir", default="data/encoder_cache")
    parser.add_argument("--configs", nargs="+", choices=list(AUDIO_COLUMNS), default=list(AUDIO_COLUMNS))
    parser.add_argument("--splits", nargs="+", choices=SPLITS, default=list(SPLITS))
    parser.add_argument("--columns", nargs="+",
                        help="only these audio columns (default: every audio column of a config)")
    args = parser.parse_args(argv)
    encoder = RealLengthWhisperEncoder.from_whisper(args.whisper)
    feature_extractor = USTokenizerFeatureExtractor()
    for config in args.configs:
        for column in AUDIO_COLUMNS[config]:
            if args.columns is None or column in args.columns:
                for split in args.splits:
                    cached_encoder_outputs(args.corpus, config, split, encoder, feature_extractor, args.cache_dir,
                                           column=column)


__all__ = ["cached_encoder_outputs", "codes_fingerprint", "encode_batch", "encode_sorted", "weights_fingerprint",
           "corpus_identity", "built_from", "read_cache", "write_cache"]
