"""transformers' neural codecs behind the `SpeechCodecMixin` interface: the residual-VQ EnCodec, DAC, Mimi and
X-Codec, and the single-codebook WavTokenizer (the paper's codec), Xcodec2 and NeuCodec.

`TransformersCodec` wraps one of these models; what differs between them (config field names, the
encode/decode calls, how the number of codebooks is chosen) lives in one table, `_SPECS`.

Shapes: waveforms `[batch, samples]` (mono, float, at the adapter's `sampling_rate`: 16 kHz unless told, resampled
to and from the model's own rates inside), codes `[batch, num_codebooks, frames]` (long, in `[0, codebook_size)`),
`frames = ceil(samples * frame_rate / sampling_rate)` and `frame_rate = model_sampling_rate / hop_length` exactly (not
the rounded `config.frame_rate` some configs report, e.g. 32 for DAC 16 kHz whose true rate is 31.25 Hz).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Callable

import torch
import torchaudio
from transformers import AutoModel, NeuCodecFeatureExtractor, Xcodec2FeatureExtractor
from transformers.utils import cached_file

from .codec_base import SpeechCodecMixin, lengths_to_mask

ADAPTER_CONFIG_NAME = "dualspeechlm_codec.json"
SAMPLING_RATE = 16_000  # DualSpeechLM's audio rate (corpus, USTokenizer, speaker encoder): the adapters' default
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


def _check_mono(config) -> None:
    """Mimi, WavTokenizer: the adapter feeds `[B, 1, T]` waveforms."""
    if config.audio_channels != 1:
        raise ValueError(f"only mono {config.model_type} models are supported, this one has "
                         f"audio_channels={config.audio_channels}")


def _single_codebook(model) -> dict[int, dict]:
    """WavTokenizer, Xcodec2, NeuCodec: one codebook, nothing to choose."""
    return {1: {}}


def _check_mel_hop(config, hop_length: int) -> None:
    """Xcodec2, NeuCodec: their semantic branch reads one stacked pair of 10 ms log-mel frames per code, so the
    acoustic encoder must hop the same 320 samples (`prod(downsampling_ratios)`) for the two to line up."""
    extractor = Xcodec2FeatureExtractor()
    if hop_length != extractor.frame_shift * extractor.stride:
        raise ValueError(
            f"{config.model_type}'s acoustic encoder hops {hop_length} samples per code, but its semantic features "
            f"come every {extractor.frame_shift * extractor.stride} ({extractor.stride} log-mel frames of "
            f"{extractor.frame_shift} samples); set downsampling_ratios to multiply to that"
        )


def _encode_with_extractor(model, extractor, waveforms: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Xcodec2, NeuCodec: codes `[B, 1, F']` of `waveforms` `[B, 1, T]`, item b being its first `lengths[b]` samples.

    Their semantic branch (w2v-BERT) reads log-mel features normalised over each item's own frames, which the model's
    own feature extractor computes: it runs here (on the CPU, as it does in transformers), one item at a time, and
    pads the batch itself. `F'` may exceed the adapter's `ceil(lengths / hop)` frames (the extractor pads every item by
    at least one sample); the caller keeps the frames it promised.
    """
    items = [waveforms[b, 0, :n].float().cpu() for b, n in enumerate(lengths.tolist())]
    inputs = extractor(items, sampling_rate=extractor.sampling_rate, return_tensors="pt")
    return model.encode(
        input_values=inputs["input_values"].to(waveforms),
        input_features=inputs["input_features"].to(waveforms),
        input_features_mask=inputs["input_features_mask"].to(waveforms.device),
    ).audio_codes


def _encode_xcodec2(model, waveforms, mask, **kwargs) -> torch.Tensor:
    # each item as it is: the extractor pads it to whole frames (plus one sample), as in transformers' own pipeline
    extractor = Xcodec2FeatureExtractor(sampling_rate=model.config.sampling_rate, hop_length=model.config.hop_length)
    return _encode_with_extractor(model, extractor, waveforms, mask.sum(-1)[:, 0])


def _encode_neucodec(model, waveforms, mask, **kwargs) -> torch.Tensor:
    # each item zero-padded to whole frames: NeuCodec cuts its acoustic branch to the semantic one's floor(T / hop)
    # frames, which would drop an item's last, partial frame
    hop = model.config.encoder_hop_length
    extractor = NeuCodecFeatureExtractor(sampling_rate=model.config.input_sampling_rate, hop_length=hop)
    return _encode_with_extractor(model, extractor, waveforms, -(-mask.sum(-1)[:, 0] // hop) * hop)


@dataclass(frozen=True)
class _CodecSpec:
    """How one transformers codec names and does things. `encode(model, x [B, 1, T], mask [B, 1, T], **kw)`
    returns codes `[B, n_q, >= T / hop]` (x at `sampling_rate`); `decode(model, codes [B, n_q, F])` returns audio
    `[B, (1,) F * hop * output_sampling_rate / sampling_rate]`."""

    sampling_rate: Callable  # config -> the rate of the audio `encode` reads
    hop_length: Callable  # config -> samples per code frame, at `sampling_rate`
    options: Callable  # model -> {num_codebooks: encode kwargs}
    default_num_codebooks: Callable  # model -> what the model's own encode uses when not told
    encode: Callable
    decode: Callable
    check: Callable = lambda config: None
    codebook_size: Callable = lambda config: config.codebook_size
    output_sampling_rate: Callable | None = None  # config -> the rate of the audio `decode` returns; None: the same
    # whether padding a batch can change an item's codes or decoded audio anywhere, not only near its end (`per_item`)
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
        check=_check_mono,
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
    "wavtokenizer": _CodecSpec(
        sampling_rate=lambda c: c.sampling_rate,  # 24 kHz for the released checkpoints
        hop_length=lambda c: c.hop_length,  # prod(upsampling_ratios): 600, 40 codes/s
        options=_single_codebook,
        default_num_codebooks=lambda m: 1,
        # its padding_mask only yields `audio_codes_mask`, never changes the codes
        encode=lambda m, x, mask, **kw: m.encode(x, return_dict=True).audio_codes,
        decode=lambda m, codes: m.decode(codes, return_dict=True).audio_values,
        check=_check_mono,
        # its decoder attends over (and group-norms across) all frames of the padded batch
        padding_leaks_everywhere=True,
    ),
    "xcodec2": _CodecSpec(
        sampling_rate=lambda c: c.sampling_rate,  # 16 kHz
        hop_length=lambda c: c.hop_length,  # 320, 50 codes/s
        options=_single_codebook,
        default_num_codebooks=lambda m: 1,
        encode=_encode_xcodec2,
        decode=lambda m, codes: m.decode(codes, return_dict=True).audio_values,
        check=lambda c: _check_mel_hop(c, c.hop_length),
        codebook_size=lambda c: math.prod(c.quantization_levels),  # FSQ: every combination of levels, 4^8 = 65,536
        # its decoder's transformer attends over all frames (no mask), its ResNet blocks group-norm across them
        padding_leaks_everywhere=True,
    ),
    "neucodec": _CodecSpec(
        sampling_rate=lambda c: c.input_sampling_rate,  # 16 kHz in
        hop_length=lambda c: c.encoder_hop_length,  # 320, 50 codes/s (`config.hop_length` is the decoder's, at 24 kHz)
        options=_single_codebook,
        default_num_codebooks=lambda m: 1,
        encode=_encode_neucodec,
        decode=lambda m, codes: m.decode(codes, return_dict=True).audio_values,
        check=lambda c: _check_mel_hop(c, c.encoder_hop_length),
        codebook_size=lambda c: math.prod(c.quantization_levels),  # FSQ, as Xcodec2
        output_sampling_rate=lambda c: c.output_sampling_rate,  # 24 kHz out
        # batched, its decoder could mask attention (`audio_codes_mask`) but its ResNet blocks group-norm across the
        # padding anyway
        padding_leaks_everywhere=True,
    ),
}

SUPPORTED_TRANSFORMERS_CODECS: tuple[str, ...] = tuple(_SPECS)


class TransformersCodec(torch.nn.Module, SpeechCodecMixin):
    """A transformers codec model (`EncodecModel`, `DacModel`, `MimiModel`, `XcodecModel`, `WavTokenizerModel`,
    `Xcodec2Model`, `NeuCodecModel`) as a DualSpeechLM codec.

    Args:
        model: the wrapped model; kept in eval mode.
        num_codebooks: codebooks to encode with; default what the model's own `encode` uses (EnCodec: the
            lowest target bandwidth, X-Codec: the highest, DAC: all, Mimi: `config.num_quantizers`, WavTokenizer,
            Xcodec2, NeuCodec: their only one). EnCodec and X-Codec choose through a bandwidth, so only the counts of
            `config.target_bandwidths` are allowed.
        per_item: run the model one waveform (or one code sequence) at a time, so results never depend on
            what else is in the batch. Default True for X-Codec, WavTokenizer, Xcodec2 and NeuCodec, whose outputs
            change everywhere with padding (X-Codec's codes, the others' decoded audio), False for the others, where
            padding only touches frames/samples near an item's end (see the tests).
        sampling_rate: the rate of the waveforms `encode` reads and `decode` returns, default DualSpeechLM's 16 kHz.
            The model's own rates (`model_sampling_rate` in, `model_output_sampling_rate` out; e.g. WavTokenizer
            24 kHz, NeuCodec 16 kHz in and 24 kHz out) are resampled to and from inside; pass the model's rate to
            skip that.
    """

    def __init__(self, model, num_codebooks: int | None = None, per_item: bool | None = None,
                 sampling_rate: int = SAMPLING_RATE):
        super().__init__()
        model_type = getattr(model.config, "model_type", None)
        if model_type not in _SPECS:
            raise ValueError(f"unsupported codec model type {model_type!r}; "
                             f"supported: {SUPPORTED_TRANSFORMERS_CODECS}")
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
        self.sampling_rate = int(sampling_rate)
        self.model_sampling_rate = int(spec.sampling_rate(model.config))
        self.model_output_sampling_rate = int((spec.output_sampling_rate or spec.sampling_rate)(model.config))
        self.hop_length = int(spec.hop_length(model.config))  # at model_sampling_rate
        self.frame_rate = self.model_sampling_rate / self.hop_length
        self.codebook_size = int(spec.codebook_size(model.config))
        self.num_codebooks = num_codebooks
        self.encode_kwargs = options[num_codebooks]
        self.per_item = spec.padding_leaks_everywhere if per_item is None else bool(per_item)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def codec_config(self):
        return self.model.config

    def train(self, mode: bool = True):
        """The wrapped codec stays in eval mode even when a parent module trains (DAC's quantizer dropout would
        otherwise pick random codebook counts, HuBERT / Mimi / Xcodec2 / NeuCodec their dropout)."""
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
        """waveforms `[B, T]` (zero past each length), lengths `[B]` -> codes
        `[B, n_q, >= frames_for(max lengths)]`."""
        waveforms, lengths = _resample(waveforms, lengths, self.sampling_rate, self.model_sampling_rate)
        if self.per_item:
            return _stack([self._encode_batch(waveforms[i : i + 1], lengths[i : i + 1]) for i in range(len(lengths))])
        return self._encode_batch(waveforms, lengths)

    def _encode_batch(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> torch.LongTensor:
        # Zero-pad (or cut) to whole frames of the longest item (samples at model_sampling_rate): the models then emit
        # ceil(T / hop) frames (Xcodec2's extractor may add one), and a causal codec's last partial frame sees the
        # same zeros alone or padded in a batch.
        num_samples = -(-int(lengths.max()) // self.hop_length) * self.hop_length
        waveforms = waveforms[:, :num_samples]
        waveforms = torch.nn.functional.pad(waveforms, (0, num_samples - waveforms.shape[1]))
        mask = lengths_to_mask(lengths.to(waveforms.device), num_samples)
        dtype = next(self.model.parameters()).dtype
        codes = self.spec.encode(self.model, waveforms[:, None].to(dtype), mask[:, None], **self.encode_kwargs)
        return codes.long()

    def _decode(self, codes: torch.LongTensor, frame_lengths: torch.Tensor) -> torch.Tensor:
        """codes `[B, n_q, F]`, frame_lengths `[B]` -> waveforms `[B, >= samples_for(F)]` at `sampling_rate` (the
        caller trims each item)."""
        if self.per_item:
            items = [codes[i : i + 1, :, :n] for i, n in enumerate(frame_lengths.tolist())]
            waveforms = _stack([self.spec.decode(self.model, item).reshape(1, -1) for item in items])
        else:
            waveforms = self.spec.decode(self.model, codes).reshape(codes.shape[0], -1)
        # the filter treats each row alone: one call resamples the whole batch
        return _resample(waveforms.float(), None, self.model_output_sampling_rate, self.sampling_rate)[0]

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> None:
        """The wrapped model's own files plus `dualspeechlm_codec.json` (num_codebooks, per_item, sampling_rate)."""
        self.model.save_pretrained(save_directory, **kwargs)
        with open(os.path.join(save_directory, ADAPTER_CONFIG_NAME), "w") as f:
            settings = {"model_type": self.model_type, "num_codebooks": self.num_codebooks, "per_item": self.per_item,
                        "sampling_rate": self.sampling_rate}
            json.dump(settings, f, indent=2)

    @classmethod
    def from_pretrained(cls, name_or_path, num_codebooks: int | None = None, per_item: bool | None = None,
                        sampling_rate: int | None = None, **kwargs):
        """`AutoModel.from_pretrained(name_or_path, **kwargs)`, wrapped with the saved (or given) adapter settings
        (a folder without them: the model's own codebook count, 16 kHz)."""
        model = AutoModel.from_pretrained(name_or_path, **kwargs)
        hub_kwargs = {k: kwargs[k] for k in _HUB_KWARGS if k in kwargs}
        path = cached_file(name_or_path, ADAPTER_CONFIG_NAME, _raise_exceptions_for_missing_entries=False,
                           **hub_kwargs)
        saved = {}
        if path:
            with open(path) as f:
                saved = json.load(f)
        return cls(
            model,
            num_codebooks=saved.get("num_codebooks") if num_codebooks is None else num_codebooks,
            per_item=saved.get("per_item") if per_item is None else per_item,
            sampling_rate=saved.get("sampling_rate", SAMPLING_RATE) if sampling_rate is None else sampling_rate,
        )


def _resample(waveforms: torch.Tensor, lengths: torch.Tensor | None, rate: int, new_rate: int):
    """waveforms `[B, T]` at `rate` -> (`[B, ceil(T * new_rate / rate)]` at `new_rate`, lengths `[B]` there or None).

    Given lengths, each row is zeroed past its new length `ceil(lengths * new_rate / rate)`: the filter rings a few
    samples past an item's end into the batch's padding, where the item resampled alone has nothing."""
    if rate == new_rate:
        return waveforms, lengths
    waveforms = torchaudio.functional.resample(waveforms, rate, new_rate)
    if lengths is None:
        return waveforms, None
    lengths = -(-lengths * new_rate // rate)
    return waveforms * lengths_to_mask(lengths, waveforms.shape[-1]), lengths


def _stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Right-pad `[1, ..., L_i]` tensors with zeros to the longest and concatenate on the batch axis."""
    longest = max(t.shape[-1] for t in tensors)
    return torch.cat([torch.nn.functional.pad(t, (0, longest - t.shape[-1])) for t in tensors])
