"""Raw audio -> Whisper's 80-bin log-mel at its real length (no 30 s padding), for the USTokenizer.

Rules (each broken one is a ValueError that says what to do):
- `sampling_rate` is required; any rate is resampled to 16 kHz (torchaudio).
- Mono only: an item is a 1-D array / tensor / list of floats ([1, samples] and [samples, 1] are
  squeezed). Multi-channel audio is rejected, not downmixed (a [2, N] array could as well be a
  batch of two clips); downmix it yourself (`audio.mean(0)` for [channels, samples]). A batch is
  a list of items.
- Float samples, finite, not empty, at least `min_duration_s` (0.1 s = 10 mel frames = 3 tokens)
  and at most `max_duration_s` (30 s: the Whisper encoder's 1500 positions = 3000 mel frames);
  longer audio is rejected with the chunking recipe, never cut silently.

Each item's log-mel is computed on its own samples (as `WhisperFeatureExtractor` computes it), then
the batch is padded with `padding_value` to its longest item; `attention_mask` [batch, frames] marks
real mel frames (samples // 160 per item), so an item's features do not depend on its batch.
"""

from __future__ import annotations

import numpy as np
import torch
import torchaudio
from transformers import AutoFeatureExtractor, BatchFeature, WhisperFeatureExtractor

from .configuration_ustokenizer import USTokenizerConfig, untuple_auto_map


class USTokenizerFeatureExtractor(WhisperFeatureExtractor):
    r"""Whisper log-mel features at the audio's real length, with a mel-frame `attention_mask`.

    Args:
        feature_size (`int`, 80), sampling_rate (`int`, 16000), hop_length (`int`, 160), n_fft (`int`, 400):
            Whisper's mel front end (100 frames per second).
        padding_value (`float`, 0.0): value of padded mel frames (the model masks them).
        min_duration_s (`float`, 0.1), max_duration_s (`float`, 30.0): accepted audio durations.
    """

    model_input_names = ["input_features", "attention_mask"]

    def __init__(self, feature_size: int = 80, sampling_rate: int = 16000, hop_length: int = 160, n_fft: int = 400,
                 padding_value: float = 0.0, min_duration_s: float = 0.1, max_duration_s: float = 30.0, **kwargs):
        kwargs.pop("return_attention_mask", None)
        super().__init__(feature_size=feature_size, sampling_rate=sampling_rate, hop_length=hop_length, n_fft=n_fft,
                         padding_value=padding_value, return_attention_mask=True, **kwargs)
        self.min_duration_s = min_duration_s
        self.max_duration_s = max_duration_s

    def to_dict(self) -> dict:
        return untuple_auto_map(super().to_dict())

    def _as_items(self, raw_speech) -> list[torch.Tensor]:
        """One clip (1-D array / tensor / list of floats) or a list of clips -> list of 1-D float32 tensors."""
        if isinstance(raw_speech, (list, tuple)):
            if len(raw_speech) == 0:
                raise ValueError("no audio given (an empty list)")
            if np.isscalar(raw_speech[0]):
                raw_speech = [raw_speech]
        else:
            raw_speech = [raw_speech]
        items = []
        for index, item in enumerate(raw_speech):
            item = item.detach().cpu() if isinstance(item, torch.Tensor) else torch.tensor(np.asarray(item))
            if item.ndim == 2 and 1 in item.shape:
                item = item.reshape(-1)
            if item.ndim != 1:
                raise ValueError(
                    f"audio item {index} has shape {tuple(item.shape)}: only mono audio is accepted. Downmix "
                    "multi-channel audio first (audio.mean(0) for [channels, samples], audio.mean(1) for "
                    "[samples, channels]) and pass a batch as a list of 1-D arrays")
            if not item.is_floating_point():
                raise ValueError(f"audio item {index} has dtype {item.dtype}: pass float samples in [-1, 1] "
                                 "(e.g. int16 PCM / 32768)")
            items.append(item.float())
        return items

    def _check(self, index: int, item: torch.Tensor, sampling_rate: int) -> None:
        if item.numel() == 0:
            raise ValueError(f"audio item {index} is empty")
        if not bool(torch.isfinite(item).all()):
            raise ValueError(f"audio item {index} contains NaN or infinite samples")
        duration = item.numel() / sampling_rate
        if duration < self.min_duration_s:
            raise ValueError(f"audio item {index} lasts {duration:.3f} s, shorter than min_duration_s="
                             f"{self.min_duration_s} s")
        if duration > self.max_duration_s:
            limit = self.max_duration_s
            raise ValueError(
                f"audio item {index} lasts {duration:.2f} s, longer than max_duration_s={limit} s (the Whisper "
                f"encoder's position limit: {int(limit * self.sampling_rate) // self.hop_length} mel frames). Split "
                f"it into chunks of at most {limit} s and tokenize each, e.g. "
                f"[audio[i:i + n] for i in range(0, len(audio), n)] with n = int({limit} * sampling_rate)")

    def waveforms(self, raw_speech, sampling_rate: int | None) -> list[torch.Tensor]:
        """raw_speech: one mono clip or a list of them at `sampling_rate` -> checked 1-D float32 waveforms at
        `self.sampling_rate` (the module docstring's rules), the audio a tokenizer of waveforms reads."""
        if sampling_rate is None:
            raise ValueError(f"sampling_rate is required: pass the rate raw_speech was recorded at "
                             f"(any rate; {type(self).__name__} resamples to {self.sampling_rate} Hz)")
        items = self._as_items(raw_speech)
        for index, item in enumerate(items):
            self._check(index, item, sampling_rate)
        if sampling_rate == self.sampling_rate:
            return items
        return [torchaudio.functional.resample(item, sampling_rate, self.sampling_rate) for item in items]

    def __call__(self, raw_speech, sampling_rate: int | None = None, return_tensors: str | None = None,
                 device: str = "cpu", **kwargs) -> BatchFeature:
        """raw_speech: one mono clip or a list of them (np / torch / list of floats) at `sampling_rate`
        -> `input_features` [batch, 80, frames] and `attention_mask` [batch, frames] (int32), frames =
        the longest item's samples // 160 at 16 kHz."""
        features = [self._torch_extract_fbank_features(item[None].numpy(), device)[0]
                    for item in self.waveforms(raw_speech, sampling_rate)]
        frames = max(feature.shape[-1] for feature in features)
        input_features = np.full((len(features), self.feature_size, frames), self.padding_value, dtype=np.float32)
        attention_mask = np.zeros((len(features), frames), dtype=np.int32)
        for index, feature in enumerate(features):
            input_features[index, :, : feature.shape[-1]] = feature
            attention_mask[index, : feature.shape[-1]] = 1
        return BatchFeature({"input_features": input_features, "attention_mask": attention_mask},
                            tensor_type=return_tensors)


USTokenizerFeatureExtractor.register_for_auto_class()
AutoFeatureExtractor.register(USTokenizerConfig, USTokenizerFeatureExtractor)

__all__ = ["USTokenizerFeatureExtractor"]
