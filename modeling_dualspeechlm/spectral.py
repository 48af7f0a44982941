"""Spectral building blocks shared by the mel codec and its vocoders.

All functions work on padded batches and respect each item's length exactly: frames past an
item's end are zero and never leak into its valid samples, so a batch gives the same result as
each item alone (the codec's batching guarantee rests on this).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
import torchaudio
from torch import nn

from .codec_base import lengths_to_mask


def stft(waveforms: torch.Tensor, n_fft: int, hop_length: int, window: torch.Tensor) -> torch.Tensor:
    """Centered STFT with zero padding (not reflect: zeros are also what batch padding holds).
    `[batch, samples]` -> complex `[batch, n_fft // 2 + 1, samples // hop_length + 1]`."""
    return torch.stft(waveforms, n_fft, hop_length, window=window, center=True, pad_mode="constant",
                      return_complex=True)


def masked_istft(
    spectrum: torch.Tensor, frame_lengths: torch.Tensor, n_fft: int, hop_length: int, window: torch.Tensor
) -> torch.Tensor:
    """Inverse of `stft` that ignores frames past each item's length.

    spectrum: complex `[batch, n_fft // 2 + 1, frames]`; frame_lengths `[batch]`.
    Returns `[batch, frames * hop_length]`, zero past `frame_lengths * hop_length`. The window
    envelope is computed per item from its own frames, unlike `torch.istft`, whose shared envelope
    would make an item's last samples depend on the batch's padding.
    """
    batch, _, frames = spectrum.shape
    frame_mask = lengths_to_mask(frame_lengths, frames).to(window.dtype)
    segments = torch.fft.irfft(spectrum, n=n_fft, dim=1) * window[:, None] * frame_mask[:, None]
    total = n_fft + hop_length * (frames - 1)
    fold = dict(output_size=(1, total), kernel_size=(1, n_fft), stride=(1, hop_length))
    signal = F.fold(segments, **fold).reshape(batch, total)
    envelope = F.fold((window**2)[None, :, None] * frame_mask[:, None], **fold).reshape(batch, total)
    signal = signal / torch.where(envelope > 1e-8, envelope, torch.ones_like(envelope))
    signal = signal[:, n_fft // 2 : n_fft // 2 + frames * hop_length]
    sample_mask = lengths_to_mask(frame_lengths * hop_length, signal.shape[1])
    return signal * sample_mask


def griffin_lim(
    magnitude: torch.Tensor, frame_lengths: torch.Tensor, n_fft: int, hop_length: int, window: torch.Tensor,
    iterations: int = 32, momentum: float = 0.99,
) -> torch.Tensor:
    """Fast Griffin-Lim (with momentum) from a magnitude spectrogram `[batch, n_fft // 2 + 1, frames]`.
    Deterministic: phases start at zero. Returns `[batch, frames * hop_length]`."""
    angles = torch.ones_like(magnitude, dtype=torch.complex64)
    previous = torch.zeros_like(angles)
    for _ in range(iterations):
        signal = masked_istft(magnitude * angles, frame_lengths, n_fft, hop_length, window)
        rebuilt = stft(signal, n_fft, hop_length, window)[..., : magnitude.shape[-1]]
        accelerated = rebuilt - momentum / (1 + momentum) * previous
        previous = rebuilt
        angles = accelerated / accelerated.abs().clamp(min=1e-8)
    return masked_istft(magnitude * angles, frame_lengths, n_fft, hop_length, window)


@contextmanager
def float32_by_default():
    """Tensors made inside are float32 whatever the default dtype (transformers lowers it while it builds a model to
    load in `dtype=torch.bfloat16`): the spectral constants are computed, and kept, in float32."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


class LogMelSpectrogram(nn.Module):
    """`[batch, samples]` -> natural-log mel magnitudes `[batch, n_mels, samples // hop + 1]`
    (slaney mel scale, floor 1e-5), plus `mel_to_magnitude` for vocoding without weights."""

    def __init__(self, sampling_rate: int, n_fft: int, hop_length: int, n_mels: int, f_min: float, f_max: float):
        super().__init__()
        self.sampling_rate, self.n_fft, self.hop_length = sampling_rate, n_fft, hop_length
        self.n_mels, self.f_min, self.f_max = n_mels, f_min, f_max
        default_device = torch.empty(0).device  # "meta" while transformers builds a model to load
        for name, value in self.spectral_buffers().items():
            self.register_buffer(name, value.to(default_device), persistent=False)

    def spectral_buffers(self) -> dict[str, torch.Tensor]:
        """The constant buffers, recomputed by the model's `_init_weights` after a meta-device load."""
        with torch.device("cpu"), float32_by_default():
            filters = torchaudio.functional.melscale_fbanks(
                self.n_fft // 2 + 1, self.f_min, self.f_max, self.n_mels, self.sampling_rate, norm="slaney",
                mel_scale="slaney",
            )  # [freqs, n_mels]
            return {"window": torch.hann_window(self.n_fft), "filters": filters,
                    "pseudo_inverse": torch.linalg.pinv(filters)}

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        magnitude = stft(waveforms, self.n_fft, self.hop_length, self.window).abs()
        mel = torch.einsum("bft,fm->bmt", magnitude, self.filters)
        return torch.log(mel.clamp(min=1e-5))

    def mel_to_magnitude(self, log_mel: torch.Tensor) -> torch.Tensor:
        """Least-squares linear magnitudes `[batch, freqs, frames]` for log-mel `[batch, n_mels, frames]`."""
        return torch.einsum("bmt,mf->bft", log_mel.exp(), self.pseudo_inverse).clamp(min=0)
