"""transformers' neural codecs (EnCodec, DAC, Mimi, X-Codec) behind the `SpeechCodecMixin` interface.

`TransformersCodec` wraps one of these models; what differs between them (config field names, the
encode/decode calls, how the number of codebooks is chosen) lives in one table, `_SPECS`.

Shapes: waveforms `[batch, samples]` (mono, float, at `sampling_rate`), codes
`[batch, num_codebooks, frames]` (long, in `[0, codebook_size)`), `frames = ceil(samples / hop_length)`
and `frame_rate = sampling_rate / hop_length` exactly (not the rounded `config.frame_rate` some
configs report, e.g. 32 for DAC 16 kHz whose true rate is 31.25 Hz).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Callable

import torch
from transformers import AutoModel
from transformers.utils import cached_file

from .base import SpeechCodecMixin, lengths_to_mask

ADAPTER_CONFIG_NAME = "dualspeechlm_codec.json"
_HUB_KWARGS = ("cache_dir", "revision", "token", "local_files_only", "subfolder")


def _bandwidth_options(model) -> dict[int, dict]:
    """EnCodec, X-Codec: `encode` takes a bandwidth (kbps) from `config.target_bandwidths`."""
    bandwidths = model.config.target_bandwidths
    return {model.quantizer.get_num_quantizers_for_bandwidth(bw): {"bandwidth": bw} for bw in reversed(bandwidths)}


def _check_encodec(config) -> None:
    if config.audio_channels != 1 or config.chunk_length_s is not None or config.normalize:
        raise ValueError(
            "only mono, unchunked, unnormalised EnCodec models (like facebook/encodec_24khz) give one flat frame "
            "sequence; this one has audio_channels={}, chunk_length_s={}, normalize={} (encodec_48khz-style models "
            "emit overlapping chunks with per-chunk scales that codes alone cannot carry)".format(
                config.audio_channels, config.chunk_length_s, config.normalize)
        )


def _check_mimi(config) -> None:
    if config.audio_channels != 1:
        raise ValueError(f"only mono Mimi models are supported, this one has audio_channels={config.audio_channels}")


@dataclass(frozen=True)
class _CodecSpec:
    """How one transformers codec names and does things. `encode(model, x [B, 1, T], mask [B, 1, T], **kw)`
    returns codes `[B, n_q, T / hop]`; `decode(model, codes [B, n_q, F])` returns audio `[B, (1,) T']`."""

    sampling_rate: Callable
    hop_length: Callable  # samples per code frame
    options: Callable  # model -> {num_codebooks: encode kwargs}
    default_num_codebooks: Callable  # model -> what the model's own encode uses when not told
    encode: Callable
    decode: Callable
    check: Callable = lambda config: None
    # whether padding a batch can change an item's codes anywhere, not only near its end (see `per_item`)
    padding_leaks_everywhere: bool = False


_SPECS: dict[str, _CodecSpec] = {
    "encodec": _CodecSpec(
        sampling_rate=lambda c: c.sampling_rate,
        hop_length=lambda c: c.hop_length,
        options=_bandwidth_options,
        default_num_codebooks=lambda m: m.quantizer.get_num_quantizers_for_bandwidth(m.config.target_bandwidths[0]),
        encode=lambda m, x, mask, **kw: m.encode(x, padding_mask=mask, return_dict=True, **kw).audio_codes[0],
        decode=lambda m, codes: m.decode(codes[None], [None], return_dict=True).audio_values,
        check=_check_encodec,
    ),
    "dac": _CodecSpec(
        sampling_rate=lambda c: c.sampling_rate,
        hop_length=lambda c: c.hop_length,
        options=lambda m: {n: {"n_quantizers": n} for n in range(1, m.config.n_codebooks + 1)},
        default_num_codebooks=lambda m: m.config.n_codebooks,
        encode=lambda m, x, mask, **kw: m.encode(x, return_dict=True, **kw).audio_codes,  # DAC has no padding mask
        decode=lambda m, codes: m.decode(audio_codes=codes, return_dict=True).audio_values,
    ),
    "mimi": _CodecSpec(
        sampling_rate=lambda c: c.sampling_rate,
        hop_length=lambda c: c.frame_size,  # SEANet hop x the 2x downsampling to 12.5 Hz
        options=lambda m: {
            n: {"num_quantizers": n} for n in range(m.config.num_semantic_quantizers, m.config.num_quantizers + 1)
        },
        default_num_codebooks=lambda m: m.config.num_quantizers,
        encode=lambda m, x, mask, **kw: m.encode(x, padding_mask=mask, **kw).audio_codes,
        decode=lambda m, codes: m.decode(codes).audio_values,
        check=_check_mimi,
    ),
    "xcodec": _CodecSpec(
        sampling_rate=lambda c: c.sample_rate,  # X-Codec alone says `sample_rate`
        hop_length=lambda c: c.hop_length,
        options=_bandwidth_options,
        default_num_codebooks=lambda m: m.quantizer.get_num_quantizers_for_bandwidth(m.config.target_bandwidths[-1]),
        encode=lambda m, x, mask, **kw: m.encode(x, return_dict=True, **kw).audio_codes,  # no padding mask
        decode=lambda m, codes: m.decode(codes, return_dict=True).audio_values,
        # its HuBERT branch attends over (and group-norms across) the whole padded input
        padding_leaks_everywhere=True,
    ),
}

SUPPORTED_TRANSFORMERS_CODECS: tuple[str, ...] = tuple(_SPECS)


class TransformersCodec(torch.nn.Module, SpeechCodecMixin):
    """A transformers codec model (`EncodecModel`, `DacModel`, `MimiModel`, `XcodecModel`) as a DualSpeechLM codec.

    Args:
        model: the wrapped model; kept in eval mode.
        num_codebooks: codebooks to encode with; default what the model's own `encode` uses (EnCodec: the
            lowest target bandwidth, X-Codec: the highest, DAC: all, Mimi: `config.num_quantizers`). EnCodec and
            X-Codec choose through a bandwidth, so only the counts of `config.target_bandwidths` are allowed.
        per_item: run the model one waveform (or one code sequence) at a time, so results never depend on
            what else is in the batch. Default True for X-Codec, whose output changes everywhere with padding,
            False for the others, where padding only touches frames/samples near an item's end (see the tests).
    """

    def __init__(self, model, num_codebooks: int | None = None, per_item: bool | None = None):
        super().__init__()
        model_type = getattr(model.config, "model_type", None)
        if model_type not in _SPECS:
            raise ValueError(f"unsupported codec model type {model_type!r}; supported: {SUPPORTED_TRANSFORMERS_CODECS}")
        self.spec = spec = _SPECS[model_type]
        spec.check(model.config)
        options = spec.options(model)
        num_codebooks = spec.default_num_codebooks(model) if num_codebooks is None else int(num_codebooks)
        if num_codebooks not in options:
            raise ValueError(
                f"{model_type} cannot encode with {num_codebooks} codebooks; choose one of {sorted(options)} "
                f"(encode arguments: {dict(sorted(options.items()))})"
            )
        self.model = model.eval()
        self.model_type = model_type
        self.sampling_rate = int(spec.sampling_rate(model.config))
        self.hop_length = int(spec.hop_length(model.config))
        self.frame_rate = self.sampling_rate / self.hop_length
        self.codebook_size = int(model.config.codebook_size)
        self.num_codebooks = num_codebooks
        self.encode_kwargs = options[num_codebooks]
        self.per_item = spec.padding_leaks_everywhere if per_item is None else bool(per_item)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def train(self, mode: bool = True):
        """The wrapped codec stays in eval mode even when a parent module trains (DAC's quantizer dropout would
        otherwise pick random codebook counts, HuBERT / Mimi their dropout)."""
        super().train(mode)
        self.model.eval()
        return self

    def _apply(self, fn, *args, **kwargs):
        # Mimi caches each codebook (`MimiEuclideanCodebook._embed`) on first use, and `.to()` does not move
        # that plain attribute: drop it so it is rebuilt on the new device / dtype.
        for module in self.model.modules():
            if getattr(module, "_embed", None) is not None:
                module._embed = None
        return super()._apply(fn, *args, **kwargs)

    def _encode(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> torch.LongTensor:
        """waveforms `[B, T]` (zero past each length), lengths `[B]` -> codes `[B, n_q, ceil(max(lengths) / hop)]`."""
        if self.per_item:
            return _stack([self._encode_batch(waveforms[i : i + 1], lengths[i : i + 1]) for i in range(len(lengths))])
        return self._encode_batch(waveforms, lengths)

    def _encode_batch(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> torch.LongTensor:
        # Zero-pad (or cut) to whole frames of the longest item: the models then emit exactly ceil(T / hop)
        # frames, and a causal codec's last partial frame sees the same zeros alone or padded in a batch.
        num_samples = -(-int(lengths.max()) // self.hop_length) * self.hop_length
        waveforms = waveforms[:, :num_samples]
        waveforms = torch.nn.functional.pad(waveforms, (0, num_samples - waveforms.shape[1]))
        mask = lengths_to_mask(lengths.to(waveforms.device), num_samples)
        dtype = next(self.model.parameters()).dtype
        codes = self.spec.encode(self.model, waveforms[:, None].to(dtype), mask[:, None], **self.encode_kwargs)
        return codes.long()

    def _decode(self, codes: torch.LongTensor, frame_lengths: torch.Tensor) -> torch.Tensor:
        """codes `[B, n_q, F]`, frame_lengths `[B]` -> waveforms `[B, F * hop]` (the caller trims each item)."""
        if self.per_item:
            items = [codes[i : i + 1, :, :n] for i, n in enumerate(frame_lengths.tolist())]
            return _stack([self.spec.decode(self.model, item).reshape(1, -1) for item in items])
        return self.spec.decode(self.model, codes).reshape(codes.shape[0], -1)

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> None:
        """The wrapped model's own files plus `dualspeechlm_codec.json` (num_codebooks, per_item)."""
        self.model.save_pretrained(save_directory, **kwargs)
        with open(os.path.join(save_directory, ADAPTER_CONFIG_NAME), "w") as f:
            settings = {"model_type": self.model_type, "num_codebooks": self.num_codebooks, "per_item": self.per_item}
            json.dump(settings, f, indent=2)

    @classmethod
    def from_pretrained(cls, name_or_path, num_codebooks: int | None = None, per_item: bool | None = None, **kwargs):
        """`AutoModel.from_pretrained(name_or_path, **kwargs)`, wrapped with the saved (or given) adapter settings."""
        model = AutoModel.from_pretrained(name_or_path, **kwargs)
        hub_kwargs = {k: kwargs[k] for k in _HUB_KWARGS if k in kwargs}
        path = cached_file(name_or_path, ADAPTER_CONFIG_NAME, _raise_exceptions_for_missing_entries=False, **hub_kwargs)
        saved = {}
        if path:
            with open(path) as f:
                saved = json.load(f)
        return cls(
            model,
            num_codebooks=saved.get("num_codebooks") if num_codebooks is None else num_codebooks,
            per_item=saved.get("per_item") if per_item is None else per_item,
        )


def _stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Right-pad `[1, ..., L_i]` tensors with zeros to the longest and concatenate on the batch axis."""
    longest = max(t.shape[-1] for t in tensors)
    return torch.cat([torch.nn.functional.pad(t, (0, longest - t.shape[-1])) for t in tensors])
