"""The acoustic codec interface DualSpeechLM writes through.

A codec turns 1-D waveforms into discrete codes `[batch, num_codebooks, frames]` and back. Every
implementation (the embedded mel codec, the adapters for transformers' codecs) subclasses
`SpeechCodecMixin`, states its four numbers and implements `_encode` / `_decode` on padded,
validated tensors; padding, lengths and input checks live here once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.utils import ModelOutput


@dataclass
class CodecEncoderOutput(ModelOutput):
    """codes: `[batch, num_codebooks, frames]` (long); lengths: valid frames per item `[batch]`."""

    codes: torch.LongTensor | None = None
    lengths: torch.LongTensor | None = None


@dataclass
class CodecDecoderOutput(ModelOutput):
    """waveforms: `[batch, samples]` (float, zero past each length); lengths: valid samples `[batch]`."""

    waveforms: torch.FloatTensor | None = None
    lengths: torch.LongTensor | None = None


def lengths_to_mask(lengths: torch.Tensor, size: int) -> torch.Tensor:
    """Boolean `[batch, size]`: True at the first `lengths[b]` positions of each row."""
    return torch.arange(size, device=lengths.device) < lengths[:, None]


def validate_waveforms(
    waveforms, lengths=None, sampling_rate: int | None = None, expected_rate: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check and normalise codec input.

    Accepts one waveform `[samples]` or a padded batch `[batch, samples]` (a list of 1-D arrays is
    padded here). Returns float32 `[batch, samples]` and lengths `[batch]`. Raises ValueError with a
    clear message on: a wrong sampling rate, stereo/multi-channel input, an empty waveform, NaN or
    infinite samples, lengths that do not fit the batch.
    """
    if sampling_rate is not None and expected_rate is not None and sampling_rate != expected_rate:
        raise ValueError(
            f"audio is at {sampling_rate} Hz but this codec expects {expected_rate} Hz; resample first "
            f"(e.g. torchaudio.functional.resample(waveform, {sampling_rate}, {expected_rate}))"
        )
    if isinstance(waveforms, (list, tuple)):
        items = [torch.as_tensor(w, dtype=torch.float32) for w in waveforms]
        if any(item.ndim != 1 for item in items):
            raise ValueError("each waveform in a list must be 1-D [samples]; downmix stereo audio to mono first")
        if lengths is None:
            lengths = [item.shape[0] for item in items]
        waveforms = torch.nn.utils.rnn.pad_sequence(items, batch_first=True) if items else torch.zeros(0, 0)
    waveforms = torch.as_tensor(waveforms, dtype=torch.float32)
    if waveforms.ndim == 1:
        waveforms = waveforms[None]
    if waveforms.ndim != 2:
        raise ValueError(
            f"expected mono waveforms [batch, samples], got shape {tuple(waveforms.shape)}; "
            "downmix stereo / multi-channel audio to mono first"
        )
    if waveforms.shape[0] == 0 or waveforms.shape[1] == 0:
        raise ValueError("cannot encode empty audio")
    lengths = (
        torch.full((waveforms.shape[0],), waveforms.shape[1], dtype=torch.long)
        if lengths is None else torch.as_tensor(lengths, dtype=torch.long).reshape(-1)
    ).to(waveforms.device)
    if lengths.shape[0] != waveforms.shape[0] or (lengths < 1).any() or (lengths > waveforms.shape[1]).any():
        raise ValueError(f"lengths {lengths.tolist()} do not fit waveforms of shape {tuple(waveforms.shape)}")
    if not torch.isfinite(waveforms).all():
        raise ValueError("audio contains NaN or infinite samples")
    mask = lengths_to_mask(lengths, waveforms.shape[1])
    return waveforms * mask, lengths


class SpeechCodecMixin:
    """Shared `encode` / `decode` for codecs. Subclasses set the four properties and implement
    `_encode(waveforms [B, T], lengths [B]) -> codes [B, n_q, F]` and
    `_decode(codes [B, n_q, F], frame_lengths [B]) -> waveforms [B, T']`. A codec whose decoder also reads
    the speech's USTokens sets `ustoken_vocab_size` and takes `ustokens=` / `ustoken_lengths=` in `_decode`; one that
    reads the target voice's speaker embedding sets `speaker_embedding_size` and takes `speaker_embeddings=`."""

    sampling_rate: int
    frame_rate: float
    codebook_size: int
    num_codebooks: int
    ustoken_vocab_size: int | None = None  # None: the decoder reads codes only
    speaker_embedding_size: int | None = None  # None: the voice comes from the codes alone

    @property
    def codec_config(self):
        """The config `codec_from_config` rebuilds this codec from: what a DualSpeechLMConfig's `codec_config`
        holds."""
        return self.config

    def encoding_modules(self) -> list[torch.nn.Module]:
        """The modules that turn waveforms into codes: while they stay the same, so do the codes (and caches of them,
        and a model trained on them), whatever the decoder becomes."""
        return [self]

    @property
    def decodes_ustokens_alone(self) -> bool:
        """Given USTokens, does the decoder read no code at all? Then whoever writes speech need not write codes."""
        return False

    def frames_for(self, num_samples: torch.Tensor) -> torch.Tensor:
        """Code frames that cover `num_samples` samples (ceil)."""
        return torch.ceil(torch.as_tensor(num_samples) * self.frame_rate / self.sampling_rate).long()

    def samples_for(self, num_frames: torch.Tensor) -> torch.Tensor:
        return torch.round(torch.as_tensor(num_frames) * self.sampling_rate / self.frame_rate).long()

    @torch.no_grad()
    def encode(self, waveforms, lengths=None, sampling_rate: int | None = None) -> CodecEncoderOutput:
        """waveforms `[batch, samples]` (or `[samples]`, or a list of 1-D arrays) at `self.sampling_rate`."""
        waveforms, lengths = validate_waveforms(waveforms, lengths, sampling_rate, self.sampling_rate)
        frame_lengths = self.frames_for(lengths).to(self.device)
        codes = self._encode(waveforms.to(self.device), lengths.to(self.device))
        if codes.shape[-1] < int(frame_lengths.max()):
            raise RuntimeError(f"{type(self).__name__} returned {codes.shape[-1]} frames for "
                               f"{int(lengths.max())} samples; the interface promises {int(frame_lengths.max())}")
        codes = codes[..., : int(frame_lengths.max())]
        mask = lengths_to_mask(frame_lengths, codes.shape[-1])
        return CodecEncoderOutput(codes=codes * mask[:, None], lengths=frame_lengths)

    @torch.no_grad()
    def encode_each(self, waveforms: list, sampling_rate: int | None = None,
                    batch_size: int = 16) -> list[torch.LongTensor]:
        """Codes `[num_codebooks, frames]` of each of many 1-D waveforms, encoded in batches of like length (little
        padding; longest first, so that each batch's buffers fit in the freed ones of the batch before)."""
        codes = [None] * len(waveforms)
        order = sorted(range(len(waveforms)), key=lambda i: len(waveforms[i]), reverse=True)
        for start in range(0, len(order), batch_size):
            picked = order[start : start + batch_size]
            out = self.encode([torch.as_tensor(waveforms[i], dtype=torch.float32) for i in picked],
                              sampling_rate=sampling_rate)
            for i, row, length in zip(picked, out.codes.cpu(), out.lengths.tolist()):
                codes[i] = row[:, :length]
        return codes

    @torch.no_grad()
    def decode(self, codes, lengths=None, ustokens=None, ustoken_lengths=None,
               speaker_embeddings=None) -> CodecDecoderOutput:
        """codes `[batch, num_codebooks, frames]` (or `[num_codebooks, frames]`) -> waveforms. A codec with
        `ustoken_vocab_size` also reads the speech's USTokens `[batch, tokens]` (25 Hz; `ustoken_lengths` `[batch]`,
        default all), which carry its words; one with `speaker_embedding_size` the voice's `speaker_embeddings`
        `[batch, speaker_embedding_size]`."""
        codes = torch.as_tensor(codes, dtype=torch.long)
        if codes.ndim == 2:
            codes = codes[None]
        if codes.ndim != 3 or codes.shape[1] != self.num_codebooks or codes.shape[-1] == 0:
            raise ValueError(
                f"expected codes [batch, {self.num_codebooks}, frames>0], got shape {tuple(codes.shape)}"
            )
        if codes.min() < 0 or codes.max() >= self.codebook_size:
            raise ValueError(f"codes must lie in [0, {self.codebook_size}), got [{codes.min()}, {codes.max()}]")
        lengths = (
            torch.full((codes.shape[0],), codes.shape[-1], dtype=torch.long)
            if lengths is None else torch.as_tensor(lengths, dtype=torch.long).reshape(-1)
        ).cpu()  # the waveforms come back on the CPU
        if lengths.shape[0] != codes.shape[0] or (lengths < 1).any() or (lengths > codes.shape[-1]).any():
            raise ValueError(f"lengths {lengths.tolist()} do not fit codes of shape {tuple(codes.shape)}")
        extra = {} if ustokens is None else self._check_ustokens(ustokens, ustoken_lengths, codes.shape[0])
        if ustokens is not None:
            lengths = self.frames_to_decode(lengths, extra["ustoken_lengths"].cpu())
            codes = torch.nn.functional.pad(codes, (0, max(0, int(lengths.max()) - codes.shape[-1])))
        if speaker_embeddings is not None:
            extra["speaker_embeddings"] = self._check_speaker_embeddings(speaker_embeddings, codes.shape[0])
        waveforms = self._decode(codes.to(self.device), lengths.to(self.device), **extra).float().cpu()
        sample_lengths = torch.clamp(self.samples_for(lengths), max=waveforms.shape[-1])
        waveforms = waveforms[:, : int(sample_lengths.max())]
        mask = lengths_to_mask(sample_lengths, waveforms.shape[-1])
        return CodecDecoderOutput(waveforms=waveforms * mask, lengths=sample_lengths)

    def frames_to_decode(self, code_lengths: torch.Tensor, ustoken_lengths: torch.Tensor) -> torch.Tensor:
        """Frames to decode per item `[batch]` when USTokens are read: the codes' own (a codec that does not read the
        codes for the words may take the tokens' extent instead)."""
        return code_lengths

    def _check_ustokens(self, ustokens, ustoken_lengths, batch: int) -> dict:
        """-> `_decode`'s keyword arguments `ustokens` `[batch, tokens]` and `ustoken_lengths` `[batch]` on this
        codec's device, or a clear error."""
        if self.ustoken_vocab_size is None:
            raise ValueError(f"this {type(self).__name__} does not read USTokens (its ustoken_vocab_size is None)")
        ustokens = torch.as_tensor(ustokens, dtype=torch.long)
        if ustokens.ndim == 1:
            ustokens = ustokens[None]
        if ustokens.ndim != 2 or ustokens.shape[0] != batch or ustokens.shape[1] == 0:
            raise ValueError(f"expected ustokens [batch={batch}, tokens>0], got shape {tuple(ustokens.shape)}")
        ustoken_lengths = (torch.full((batch,), ustokens.shape[1], dtype=torch.long) if ustoken_lengths is None
                           else torch.as_tensor(ustoken_lengths, dtype=torch.long).reshape(-1)).to(ustokens.device)
        if (ustoken_lengths.shape[0] != batch or (ustoken_lengths < 0).any()
                or (ustoken_lengths > ustokens.shape[1]).any()):
            raise ValueError(f"ustoken_lengths {ustoken_lengths.tolist()} do not fit ustokens of shape "
                             f"{tuple(ustokens.shape)}")
        valid = lengths_to_mask(ustoken_lengths, ustokens.shape[1])
        if (((ustokens < 0) | (ustokens >= self.ustoken_vocab_size)) & valid).any():
            raise ValueError(f"USTokens must lie in [0, {self.ustoken_vocab_size}) within ustoken_lengths")
        return {"ustokens": (ustokens * valid).to(self.device), "ustoken_lengths": ustoken_lengths.to(self.device)}

    def _check_speaker_embeddings(self, speaker_embeddings, batch: int) -> torch.Tensor:
        """-> `speaker_embeddings` as float `[batch, speaker_embedding_size]` on this codec's device, or a clear
        error."""
        if self.speaker_embedding_size is None:
            raise ValueError(f"this {type(self).__name__} does not read speaker embeddings "
                             "(its speaker_embedding_size is None)")
        speaker_embeddings = torch.as_tensor(speaker_embeddings, dtype=torch.float32)
        if speaker_embeddings.ndim == 1:
            speaker_embeddings = speaker_embeddings[None]
        if tuple(speaker_embeddings.shape) != (batch, self.speaker_embedding_size):
            raise ValueError(f"expected speaker_embeddings [batch={batch}, {self.speaker_embedding_size}], got shape "
                             f"{tuple(speaker_embeddings.shape)}")
        if not torch.isfinite(speaker_embeddings).all():
            raise ValueError("speaker_embeddings contain NaN or infinite values")
        return speaker_embeddings.to(self.device)
