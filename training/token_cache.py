"""Stage 3's inputs, computed once per corpus split: USTokens of every audio column, and codec codes
and speaker embeddings of every audio a generation task must write.

A cached split is the corpus split's text columns plus, per audio column `c`:
`c_ustokens` (USToken ids, 25 per second; or, from a `CodecTokensModel`, codec tokens read from the audio) and,
where `c` is a generation target (TTS `audio`, SC `answer_audio`, T2ST `translation_audio`, VC `target_audio`),
`c_speaker` (the speaker encoder's embedding) and, when a codec is given, `c_codes` (`[num_codebooks * frames]`
row-major) + `c_frames`: AcousticGPT's targets, which only a recipe that trains it reads (they were 90% of the
cache's time). The Whisper encoder outputs come from `encoder_cache` (shared with stage 1), so USTokens cost only
the small convs.
"""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np
import torch
from tqdm.auto import tqdm

from dualspeechlm.feature_extraction_ustokenizer import USTokenizerFeatureExtractor
from dualspeechlm.modeling_codec_tokens import CodecTokensModel
from dualspeechlm.modeling_ustokenizer import USTokenizerModel
from dualspeechlm.processing.corpus import load_corpus
from dualspeechlm.processing.corpus.builder import AUDIO_COLUMNS
from dualspeechlm.tasks import TASKS

from .encoder_cache import (
    cached_encoder_outputs,
    codes_fingerprint,
    corpus_identity,
    read_cache,
    weights_fingerprint,
    write_cache,
)

DECODED_ROWS = 1024  # rows of a generation target's audio decoded at a time for its speaker embeddings and codes
# each corpus config's columns of spoken answers: their speakers (and codes) are cached too
GENERATION_TARGETS = {config: tuple(task.answer_audio for task in TASKS.values()
                                    if task.corpus_config == config and task.speech_output)
                      for config in {task.corpus_config for task in TASKS.values()}}


@torch.no_grad()
def ustokens(ustokenizer: USTokenizerModel, cached: datasets.Dataset, batch_size: int = 32) -> list[list[int]]:
    """USToken ids of every row of an encoder cache (see encoder_cache)."""
    rows = cached.with_format("numpy")
    ids = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        states = [torch.from_numpy(np.asarray(s, dtype=np.float32)).view(n, -1)
                  for s, n in zip(chunk["encoder_hidden_states"], chunk["num_frames"])]
        padded = torch.nn.utils.rnn.pad_sequence(states, batch_first=True)
        out = ustokenizer.encode_cached(padded, torch.tensor([len(s) for s in states]))
        ids += [row[:n].tolist() for row, n in zip(out.ids, out.lengths.tolist())]
    return ids


def column_tokens(ustokenizer: USTokenizerModel | CodecTokensModel, feature_extractor: USTokenizerFeatureExtractor,
                  corpus_dir: str | Path, config: str, split: str, column: str, cache_dir: str | Path,
                  waveform_chunks, limit: int | None = None) -> list[list[int]]:
    """Speech token ids of the first `limit` rows (None: all) of corpus column `config`/`split`/`column`: the codec
    tokens of its audio for a tokenizer that `reads_waveforms` (`waveform_chunks`: those rows' waveforms, lists in
    order; read only then), else the USTokens of its cached Whisper encoder outputs (see encoder_cache)."""
    if getattr(ustokenizer, "reads_waveforms", False):  # codec tokens (the paper's Baseline-Acoustic)
        return [ids for chunk in waveform_chunks for ids in ustokenizer.tokenize(chunk)]
    states = cached_encoder_outputs(corpus_dir, config, split, ustokenizer.encoder, feature_extractor, cache_dir,
                                    column=column)
    return ustokens(ustokenizer, states if limit is None else states.select(range(min(limit, len(states)))))


def codec_codes(codec, waveforms: list[np.ndarray]) -> tuple[list[np.ndarray], list[int]]:
    """-> (codes `[num_codebooks * frames]` int16 per item, frames per item)."""
    codes = codec.encode_each(waveforms, sampling_rate=codec.sampling_rate)
    return [row.to(torch.int16).flatten().numpy() for row in codes], [row.shape[-1] for row in codes]


def cached_tokens(corpus_dir: str | Path, config: str, split: str,
                  ustokenizer: USTokenizerModel | CodecTokensModel, feature_extractor: USTokenizerFeatureExtractor,
                  codec, speaker_encoder, cache_dir: str | Path) -> datasets.Dataset:
    """The corpus `config`/`split` with its audio replaced by USTokens, speaker embeddings and, unless `codec` is
    None, codes (module docstring), read from `cache_dir` when the corpus, the tokenizer, the speaker encoder and
    the codec's encoding modules are unchanged (a codec with a new decoder, same codes, reads the same cache). Each
    tokenizer has a folder of its own, so models trained on different tokenizers keep their caches side by side."""
    tokenizer = weights_fingerprint(ustokenizer)
    path = Path(cache_dir) / "tokens" / tokenizer / f"{config}-{split}{'' if codec is not None else '-without-codes'}"
    info = {**corpus_identity(corpus_dir), "ustokenizer": tokenizer,
            "codec_codes": None if codec is None else codes_fingerprint(codec),
            "speaker_encoder": weights_fingerprint(speaker_encoder)}
    if (cached := read_cache(path, info)) is not None:
        return cached

    source = load_corpus(corpus_dir, config)[split]
    dataset = source.remove_columns(list(AUDIO_COLUMNS[config]))
    ustokenizer.eval()

    def waveform_chunks(column: str):
        """The column's audio, a chunk of decoded rows at a time: bounded memory."""
        audio = source.select_columns([column])
        for start in range(0, len(audio), DECODED_ROWS):
            yield [np.asarray(item["array"], dtype=np.float32)
                   for item in audio.select(range(start, min(start + DECODED_ROWS, len(audio))))[column]]

    for column in tqdm(AUDIO_COLUMNS[config], desc=f"tokens {config}/{split}", unit="column"):
        tokens = column_tokens(ustokenizer, feature_extractor, corpus_dir, config, split, column, cache_dir,
                               waveform_chunks(column))
        dataset = dataset.add_column(f"{column}_ustokens", tokens)
        if column in GENERATION_TARGETS.get(config, ()):
            speakers, codes, frames = [], [], []
            for waveforms in waveform_chunks(column):
                speakers.extend(speaker_encoder.embed(waveforms, sampling_rate=16000).float().numpy())
                if codec is not None:
                    chunk_codes, chunk_frames = codec_codes(codec, waveforms)
                    codes.extend(chunk_codes)
                    frames.extend(chunk_frames)
            dataset = dataset.add_column(f"{column}_speaker", speakers,
                                         feature=datasets.List(datasets.Value("float32")))
            if codec is not None:
                dataset = dataset.add_column(f"{column}_codes", codes, feature=datasets.List(datasets.Value("int16")))
                dataset = dataset.add_column(f"{column}_frames", frames)
    return write_cache(path, dataset, info)


__all__ = ["cached_tokens", "column_tokens", "GENERATION_TARGETS", "ustokens", "codec_codes"]
