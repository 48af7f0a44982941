"""A Vocos-style neural vocoder: log-mel frames -> ConvNeXt blocks -> STFT magnitude and phase ->
inverse STFT. It runs at the frame rate (no upsampling stack), which is what makes it fast on a CPU.
The magnitude is predicted as a correction of the mel's least-squares inverse, so training spends
its few steps on phase and fine detail rather than on relearning the mel filterbank."""

from __future__ import annotations

import torch
from torch import nn

from .codec_base import lengths_to_mask
from .spectral import masked_istft


class ConvNeXtBlock(nn.Module):
    """Depthwise conv (k=7) -> LayerNorm -> pointwise MLP, with a learned residual scale."""

    def __init__(self, hidden_size: int, intermediate_size: int):
        super().__init__()
        self.depthwise = nn.Conv1d(hidden_size, hidden_size, 7, padding=3, groups=hidden_size)
        self.norm = nn.LayerNorm(hidden_size)
        self.up = nn.Linear(hidden_size, intermediate_size)
        self.down = nn.Linear(intermediate_size, hidden_size)
        self.scale = nn.Parameter(torch.full((hidden_size,), 0.1))

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """hidden `[batch, hidden, frames]`, mask `[batch, 1, frames]`."""
        update = self.norm(self.depthwise(hidden).transpose(1, 2))
        update = self.down(nn.functional.gelu(self.up(update))) * self.scale
        return (hidden + update.transpose(1, 2)) * mask


class NeuralVocoder(nn.Module):
    def __init__(self, n_mels: int, hidden_size: int, intermediate_size: int, layers: int, n_fft: int,
                 hop_length: int):
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        self.input = nn.Conv1d(n_mels, hidden_size, 7, padding=3)
        self.norm = nn.LayerNorm(hidden_size)
        self.blocks = nn.ModuleList(ConvNeXtBlock(hidden_size, intermediate_size) for _ in range(layers))
        self.output_norm = nn.LayerNorm(hidden_size)
        self.head = nn.Linear(hidden_size, n_fft + 2)  # log-magnitude and phase per frequency bin
        self.register_buffer("window", torch.hann_window(n_fft, dtype=torch.float32), persistent=False)

    def spectral_buffers(self) -> dict[str, torch.Tensor]:
        """The constant buffers, recomputed by the model's `_init_weights` after a meta-device load."""
        return {"window": torch.hann_window(self.n_fft, dtype=torch.float32)}

    def forward(self, log_mel: torch.Tensor, frame_lengths: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
        """log_mel `[batch, n_mels, frames]` and its least-squares linear magnitude `[batch, n_fft // 2 + 1,
        frames]` -> waveforms `[batch, frames * hop_length]`."""
        mask = lengths_to_mask(frame_lengths, log_mel.shape[-1])[:, None].to(log_mel.dtype)
        hidden = self.input(log_mel * mask)
        hidden = self.norm(hidden.transpose(1, 2)).transpose(1, 2) * mask
        for block in self.blocks:
            hidden = block(hidden, mask)
        correction, phase = self.head(self.output_norm(hidden.transpose(1, 2))).transpose(1, 2).chunk(2, dim=1)
        log_magnitude = magnitude.clamp(min=1e-5).log() + correction
        spectrum = torch.polar(log_magnitude.clamp(max=10).exp(), phase)
        return masked_istft(spectrum, frame_lengths, self.n_fft, self.hop_length, self.window)
