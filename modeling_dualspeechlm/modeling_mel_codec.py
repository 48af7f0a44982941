"""The embedded acoustic codec: log-mel -> conv encoder -> residual VQ -> conv decoder -> vocoder.

Every layer is masked by each item's length, so a padded batch encodes and decodes exactly like
its items one by one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput
from vector_quantize_pytorch import ResidualVQ, VectorQuantize

from .codec_base import SpeechCodecMixin, lengths_to_mask
from .configuration_mel_codec import MelCodecConfig
from .registration import register_auto_classes
from .spectral import LogMelSpectrogram, griffin_lim
from .vocoder import NeuralVocoder


class ResidualConvBlock(nn.Module):
    def __init__(self, channels: int, kernel_size: int, dilation: int):
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, kernel_size, dilation=dilation,
                              padding=dilation * (kernel_size - 1) // 2)
        self.mix = nn.Conv1d(channels, channels, 1)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return (hidden + self.mix(nn.functional.gelu(self.conv(nn.functional.gelu(hidden))))) * mask


class ConvStack(nn.Module):
    """`[batch, in_channels, frames]` -> `[batch, out_channels, frames]`: input conv, residual blocks
    with dilations 1, 2, 4, ... (context grows without striding), output conv."""

    def __init__(self, in_channels: int, hidden: int, out_channels: int, layers: int, kernel_size: int):
        super().__init__()
        self.input = nn.Conv1d(in_channels, hidden, kernel_size, padding=kernel_size // 2)
        self.blocks = nn.ModuleList(ResidualConvBlock(hidden, kernel_size, 2 ** (i % 4)) for i in range(layers))
        self.output = nn.Conv1d(hidden, out_channels, 1)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = self.input(hidden * mask) * mask
        for block in self.blocks:
            hidden = block(hidden, mask)
        return self.output(nn.functional.gelu(hidden)) * mask


@dataclass
class MelCodecOutput(ModelOutput):
    """Training forward: `loss` = mel reconstruction (L1) + commitment; mels `[batch, n_mels, frames]`,
    codes `[batch, num_quantizers, frames]`."""

    loss: torch.FloatTensor | None = None
    reconstruction_loss: torch.FloatTensor | None = None
    commitment_loss: torch.FloatTensor | None = None
    target_mel: torch.FloatTensor | None = None
    reconstructed_mel: torch.FloatTensor | None = None
    codes: torch.LongTensor | None = None


class MelCodecPreTrainedModel(PreTrainedModel):
    config_class = MelCodecConfig
    base_model_prefix = "codec"
    main_input_name = "waveforms"

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, (LogMelSpectrogram, NeuralVocoder)):  # constants, not weights: rebuild them
            for name, value in module.spectral_buffers().items():
                init.copy_(getattr(module, name), value)
        elif isinstance(module, VectorQuantize):  # its non-persistent `zero` is left unset by a meta-device load
            init.zeros_(module.zero)


class MelCodecModel(MelCodecPreTrainedModel, SpeechCodecMixin):
    """Encode 16 kHz waveforms into `num_quantizers` codes per 20 ms frame and decode them back."""

    def __init__(self, config: MelCodecConfig):
        super().__init__(config)
        self.mel = LogMelSpectrogram(config.sampling_rate, config.n_fft, config.hop_length, config.n_mels,
                                     config.f_min, config.f_max)
        self.encoder = ConvStack(config.n_mels, config.hidden_size, config.latent_size, config.encoder_layers,
                                 config.kernel_size)
        self.quantizer = ResidualVQ(
            dim=config.latent_size, num_quantizers=config.num_quantizers, codebook_size=config.codebook_size,
            decay=config.codebook_decay, commitment_weight=config.commitment_weight, kmeans_init=True,
            threshold_ema_dead_code=config.dead_code_threshold,
        )
        self.decoder = ConvStack(config.latent_size, config.hidden_size, config.n_mels, config.decoder_layers,
                                 config.kernel_size)
        if config.ustoken_vocab_size is not None:
            self.ustoken_embedding = nn.Embedding(config.ustoken_vocab_size, config.latent_size)
        if config.speaker_embedding_size is not None:
            # no bias: a zero embedding (a crop trained without its voice) decodes as no embedding at all
            self.speaker_projection = nn.Linear(config.speaker_embedding_size, config.latent_size, bias=False)
        self.vocoder = NeuralVocoder(
            config.n_mels, config.vocoder_hidden_size, config.vocoder_intermediate_size, config.vocoder_layers,
            config.n_fft, config.hop_length,
        )
        self.post_init()

    # the codec interface
    @property
    def sampling_rate(self) -> int:
        return self.config.sampling_rate

    @property
    def frame_rate(self) -> float:
        return self.config.frame_rate

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    @property
    def num_codebooks(self) -> int:
        return self.config.num_quantizers

    @property
    def ustoken_vocab_size(self) -> int | None:
        return self.config.ustoken_vocab_size

    @property
    def speaker_embedding_size(self) -> int | None:
        return self.config.speaker_embedding_size

    def encoding_modules(self) -> list[nn.Module]:
        return [self.mel, self.encoder, self.quantizer]

    @property
    def decodes_ustokens_alone(self) -> bool:
        return self.ustoken_vocab_size is not None and self.config.ustoken_decode_codebooks == 0

    def frames_to_decode(self, code_lengths: torch.Tensor, ustoken_lengths: torch.Tensor) -> torch.Tensor:
        """Reading no codebook (`ustoken_decode_codebooks=0`), the speech lasts as long as its USTokens: AcousticGPT's
        frame count only guesses it (and ends early). Items without tokens keep their codes'."""
        if not self.decodes_ustokens_alone:
            return code_lengths
        return torch.where(ustoken_lengths > 0, ustoken_lengths * self.config.frames_per_ustoken, code_lengths)

    def _frame_mask(self, frame_lengths: torch.Tensor, frames: int) -> torch.Tensor:
        return lengths_to_mask(frame_lengths, frames)[:, None].float()

    def mel_l1(self, predicted: torch.Tensor, target: torch.Tensor, frame_lengths: torch.Tensor) -> torch.Tensor:
        """Mean absolute difference of two log-mels `[batch, n_mels, frames]` over the valid frames."""
        mask = self._frame_mask(frame_lengths, target.shape[-1])
        return ((predicted - target).abs() * mask).sum() / (mask.sum() * target.shape[1])

    def log_mel(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """waveforms `[batch, samples]` -> log-mel `[batch, n_mels, frames]` and frame lengths `[batch]`
        (one frame per started hop, as `frames_for`)."""
        frame_lengths = self.frames_for(lengths)
        return self.mel(waveforms)[..., : int(frame_lengths.max())], frame_lengths

    def quantize(self, log_mel: torch.Tensor, frame_lengths: torch.Tensor):
        """log-mel `[batch, n_mels, frames]` -> (quantized latents `[batch, latent, frames]`,
        codes `[batch, num_quantizers, frames]`, commitment loss)."""
        mask = self._frame_mask(frame_lengths, log_mel.shape[-1])
        latents = self.encoder((log_mel - self.config.mel_mean) / self.config.mel_std, mask).transpose(1, 2)
        quantized, codes, commitment = self.quantizer(latents, mask=mask[:, 0].bool())
        return quantized.transpose(1, 2) * mask, codes.transpose(1, 2), commitment.sum()

    def decode_mel(self, codes: torch.Tensor, frame_lengths: torch.Tensor, ustokens: torch.Tensor | None = None,
                   ustoken_lengths: torch.Tensor | None = None, depth: int | torch.Tensor | None = None,
                   speaker_embeddings: torch.Tensor | None = None) -> torch.Tensor:
        """codes `[batch, num_quantizers, frames]` -> log-mel `[batch, n_mels, frames]`. With USTokens
        `[batch, tokens]` (+ `ustoken_lengths`), only the first `depth` codebooks are read (an int or `[batch]`;
        default the config's `ustoken_decode_codebooks`, else all) and the tokens' embeddings are added to the
        latents; so is the projection of `speaker_embeddings` `[batch, speaker_embedding_size]`, at every frame, when
        given."""
        mask = self._frame_mask(frame_lengths, codes.shape[-1])
        if depth is None:
            depth = self.config.ustoken_decode_codebooks if ustokens is not None else None
            depth = self.num_codebooks if depth is None else depth
        depth = torch.as_tensor(depth, device=codes.device).reshape(-1, 1, 1)
        kept = torch.arange(self.num_codebooks, device=codes.device)[:, None] < depth  # [batch or 1, n_q, 1]
        quantized = self.quantizer.get_output_from_indices(codes.masked_fill(~kept, -1).transpose(1, 2))
        quantized = quantized.transpose(1, 2)
        if ustokens is not None:
            quantized = quantized + self.embed_ustokens(ustokens, ustoken_lengths, codes.shape[-1])
        if speaker_embeddings is not None:
            if self.config.speaker_embedding_size is None:
                raise ValueError("this codec does not read speaker embeddings (config.speaker_embedding_size is None)")
            quantized = quantized + self.speaker_projection(speaker_embeddings)[..., None]
        return self._decode_latents(quantized * mask, mask)

    def embed_ustokens(self, ustokens: torch.Tensor, ustoken_lengths: torch.Tensor | None,
                       frames: int) -> torch.Tensor:
        """USTokens `[batch, tokens]` -> `[batch, latent_size, frames]`: frame f gets the embedding of token
        f // frames_per_ustoken, zero past the last token."""
        if self.config.ustoken_vocab_size is None:
            raise ValueError("this codec does not read USTokens (config.ustoken_vocab_size is None)")
        if ustoken_lengths is None:
            ustoken_lengths = torch.full_like(ustokens[:, 0], ustokens.shape[1])
        token = torch.arange(frames, device=ustokens.device) // self.config.frames_per_ustoken
        present = token[None] < ustoken_lengths[:, None]  # [batch, frames]
        index = token.clamp(max=ustokens.shape[1] - 1).expand(len(ustokens), -1)
        embedded = self.ustoken_embedding(ustokens.gather(1, index))
        return (embedded * present[..., None]).transpose(1, 2)

    def _decode_latents(self, quantized: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # the conv stacks work on standardised log-mel: no layer has to learn its offset and scale
        return self.decoder(quantized, mask) * self.config.mel_std + self.config.mel_mean * mask

    def vocode(self, log_mel: torch.Tensor, frame_lengths: torch.Tensor, vocoder: str | None = None) -> torch.Tensor:
        """log-mel `[batch, n_mels, frames]` -> waveforms `[batch, frames * hop_length]`, with `vocoder`
        (`"neural"` or `"griffin_lim"`; default: the config's)."""
        magnitude = self.mel.mel_to_magnitude(log_mel)
        if (vocoder or self.config.vocoder) == "griffin_lim":
            return griffin_lim(
                magnitude, frame_lengths, self.config.n_fft, self.config.hop_length, self.mel.window,
                self.config.griffin_lim_iterations,
            )
        return self.vocoder(log_mel, frame_lengths, magnitude)

    def _encode(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.quantize(*self.log_mel(waveforms, lengths))[1]

    def _decode(self, codes: torch.Tensor, frame_lengths: torch.Tensor, ustokens: torch.Tensor | None = None,
                ustoken_lengths: torch.Tensor | None = None,
                speaker_embeddings: torch.Tensor | None = None) -> torch.Tensor:
        mel = self.decode_mel(codes, frame_lengths, ustokens, ustoken_lengths, speaker_embeddings=speaker_embeddings)
        return self.vocode(mel, frame_lengths)

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> MelCodecOutput:
        """Teacher-forced autoencoding for training: waveforms `[batch, samples]`, lengths `[batch]`."""
        target, frame_lengths = self.log_mel(waveforms, lengths)
        quantized, codes, commitment = self.quantize(target, frame_lengths)
        mask = self._frame_mask(frame_lengths, target.shape[-1])
        reconstructed = self._decode_latents(quantized, mask)
        reconstruction = self.mel_l1(reconstructed, target, frame_lengths)
        return MelCodecOutput(
            loss=reconstruction + commitment, reconstruction_loss=reconstruction, commitment_loss=commitment,
            target_mel=target, reconstructed_mel=reconstructed, codes=codes,
        )


register_auto_classes(MelCodecConfig, MelCodecModel)
