"""The USTokenizer: log-mel -> frozen Whisper encoder (real length, 50 Hz) -> 25 Hz VQ ids.

    input_features [batch, n_mels, mel_frames] (100 Hz) + attention_mask [batch, mel_frames]
      -> RealLengthWhisperEncoder          [batch, ceil(mel_frames / 2), d_model]          50 Hz
      -> Conv1d(k=3, stride=2)             [batch, conv_hidden, tokens]                    25 Hz
      -> conv encoder (blocks of ELU residual units) -> ELU + Conv1d(k=3) projection
      -> VectorQuantize (1 codebook, EMA, fp32)  -> ids [batch, tokens], tokens = ceil(mel_frames / 4)
    training only:
      quantized -> mirrored decoder -> ConvTranspose1d(stride 2) -> MSE against the encoder output
      quantized -> adapter (Linear to llm_hidden_size, Conv1d k=3) -> LLM input embeddings
    with `config.kmeans_tokens` (a semantic-token baseline) the token path is fixed and frozen:
      the downsample conv takes the mean of each pair of 50 Hz frames, the projection is the identity (no ELU),
      and the codebook holds k-means centroids of those means (`set_codebook`), so ids = nearest centroid.

Every convolution sees zeros beyond each item's length and the encoder's attention ignores padded
frames, so a padded batch gives the ids of its items one by one; losses and EMA codebook updates
ignore padding. Padded id positions hold `config.ids_pad_value` (-1).

This file imports only torch, transformers, vector_quantize_pytorch and its own folder, so a saved
model folder loads with `trust_remote_code=True` where the `dualspeechlm` package is absent.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutput
from transformers.models.whisper.modeling_whisper import WhisperEncoder, sinusoids
from transformers.utils import ModelOutput
from vector_quantize_pytorch import VectorQuantize

from .configuration_ustokenizer import USTokenizerConfig
from .registration import register_auto_classes


def lengths_to_mask(lengths: torch.Tensor, frames: int) -> torch.Tensor:
    """lengths `[batch]` -> bool mask `[batch, frames]`, True on valid frames."""
    return torch.arange(frames, device=lengths.device) < lengths[:, None]


def conv_output_lengths(lengths: torch.Tensor, stride: int) -> torch.Tensor:
    """Frames out of a "same"-padded odd-kernel Conv1d with `stride`: ceil(lengths / stride)."""
    return (lengths - 1) // stride + 1


class RealLengthWhisperEncoder(WhisperEncoder):
    """Whisper's encoder run on the real number of mel frames instead of a fixed 3000.

    Same layers and weights as `WhisperEncoder` (any Whisper checkpoint loads, see `from_whisper`);
    only the forward differs: the positional table is sliced to the input length, padded mel frames
    (and conv1 outputs) are zeroed so the convs see what an unpadded item sees, and an additive
    attention mask hides padded frames from every layer. LayerDrop is not applied.
    """

    _supports_flash_attn = False  # the padding mask is an additive [batch, 1, 1, frames] tensor
    _supports_flex_attn = False
    _keys_to_ignore_on_load_unexpected = [r"decoder\.", r"proj_out\."]  # from_whisper keeps encoder.* only

    def _init_weights(self, module):
        # here, not on the encoder module: transformers skips modules without direct parameters in custom code
        super()._init_weights(module)
        if module is self.embed_positions:
            init.copy_(module.weight, sinusoids(*module.weight.shape))

    def forward(self, input_features: torch.Tensor, attention_mask: torch.Tensor | None = None,
                **kwargs) -> BaseModelOutput:
        """input_features `[batch, n_mels, mel_frames]` (mel_frames <= 2 * max_source_positions),
        attention_mask `[batch, mel_frames]` (1 = real frame; None = all real) ->
        `last_hidden_state` `[batch, ceil(mel_frames / 2), d_model]` (rows past an item's length are
        computed but meaningless; `output_lengths` gives the valid counts)."""
        batch, _, frames = input_features.shape
        if frames > 2 * self.max_source_positions:
            raise ValueError(f"{frames} mel frames exceed the encoder's limit of {2 * self.max_source_positions} "
                             f"({self.max_source_positions} positions); split the audio into chunks of at most 30 s")
        if attention_mask is None:
            attention_mask = torch.ones(batch, frames, dtype=torch.long, device=input_features.device)
        mel_mask = attention_mask.bool()[:, None]
        hidden = nn.functional.gelu(self.conv1(input_features * mel_mask)) * mel_mask
        hidden = nn.functional.gelu(self.conv2(hidden)).transpose(1, 2)
        hidden = hidden + self.embed_positions.weight[: hidden.shape[1]]
        hidden = nn.functional.dropout(hidden, p=self.dropout, training=self.training)
        valid = lengths_to_mask(self.output_lengths(attention_mask.sum(-1)), hidden.shape[1])
        additive = None
        if not bool(valid.all()):  # no mask at all keeps SDPA on its fastest kernel
            additive = (~valid[:, None, None, :]).to(hidden.dtype) * torch.finfo(hidden.dtype).min
        for layer in self.layers:
            hidden = layer(hidden, additive, **kwargs)
        return BaseModelOutput(last_hidden_state=self.layer_norm(hidden))

    def output_lengths(self, mel_lengths: torch.Tensor) -> torch.Tensor:
        """Valid 50 Hz frames for `mel_lengths` `[batch]` mel frames: ceil(mel_lengths / 2)."""
        return conv_output_lengths(mel_lengths, self.conv2.stride[0])

    @classmethod
    def from_whisper(cls, whisper: str | os.PathLike | PreTrainedModel, **kwargs) -> RealLengthWhisperEncoder:
        """The encoder of a Whisper checkpoint folder / Hub id (only `encoder.*` weights are kept) or of
        a loaded `WhisperForConditionalGeneration` / `WhisperModel` / `WhisperEncoder` (weights copied)."""
        if isinstance(whisper, PreTrainedModel):
            source = whisper.get_encoder() if hasattr(whisper, "get_encoder") else whisper
            if not isinstance(source, WhisperEncoder):
                raise TypeError(f"expected a Whisper model, got {type(whisper).__name__}")
            encoder = cls(source.config)
            encoder.load_state_dict(source.state_dict())
            return encoder.to(device=source.device, dtype=source.dtype)
        return cls.from_pretrained(whisper, key_mapping={r"^(model\.)?encoder\.": ""}, **kwargs)


class ResidualUnit(nn.Module):
    """x + Conv1x1(ELU(Conv_k(ELU(x)))) on `[batch, channels, frames]`, zero beyond each length."""

    def __init__(self, channels: int, kernel_size: int):
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2)
        self.mix = nn.Conv1d(channels, channels, 1)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        update = self.conv(nn.functional.elu(hidden) * mask)
        return (hidden + self.mix(nn.functional.elu(update))) * mask


class ConvBlock(nn.Module):
    """Residual units + ELU + same-length Conv_k; `mirrored` puts the conv first (decoder side)."""

    def __init__(self, channels: int, units: int, kernel_size: int, mirrored: bool = False):
        super().__init__()
        self.mirrored = mirrored
        self.units = nn.ModuleList(ResidualUnit(channels, kernel_size) for _ in range(units))
        self.conv = nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2)

    def _conv(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.conv(nn.functional.elu(hidden) * mask) * mask

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.mirrored:
            hidden = self._conv(hidden, mask)
        for unit in self.units:
            hidden = unit(hidden, mask)
        return hidden if self.mirrored else self._conv(hidden, mask)


@dataclass
class USTokenizerEncoderOutput(ModelOutput):
    """`ids` `[batch, tokens]` long (25 per second; `ids_pad_value` past each length), `lengths` `[batch]`."""

    ids: torch.LongTensor | None = None
    lengths: torch.LongTensor | None = None


@dataclass
class USTokenizerOutput(ModelOutput):
    """Training forward. `loss` = commitment_weight * commitment + reconstruction_weight * reconstruction
    (the recipe adds understanding_weight * its LLM cross-entropy on `adapter_embeddings`).
    `codes` `[batch, tokens]`, `quantized_latents` `[batch, tokens, codebook_dim]` (straight-through),
    `adapter_embeddings` `[batch, tokens, llm_hidden_size]` (zero past `token_lengths`),
    `encoder_hidden_states` `[batch, frames_50hz, d_model]` with `encoder_lengths`."""

    loss: torch.FloatTensor | None = None
    commitment_loss: torch.FloatTensor | None = None
    reconstruction_loss: torch.FloatTensor | None = None
    codes: torch.LongTensor | None = None
    quantized_latents: torch.FloatTensor | None = None
    adapter_embeddings: torch.FloatTensor | None = None
    token_lengths: torch.LongTensor | None = None
    encoder_hidden_states: torch.FloatTensor | None = None
    encoder_lengths: torch.LongTensor | None = None


class USTokenizerModel(PreTrainedModel):
    """Whisper encoder + 25 Hz VQ (`encode`), with the training-only decoder and LLM adapter (`forward`)."""

    config_class = USTokenizerConfig
    base_model_prefix = "ustokenizer"
    main_input_name = "input_features"
    input_modalities = ("audio",)
    _no_split_modules = ["WhisperEncoderLayer"]
    _supports_sdpa = True
    _keep_in_fp32_modules_strict = ["quantizer"]

    def __init__(self, config: USTokenizerConfig):
        super().__init__(config)
        d_model, hidden, k = config.encoder_config.d_model, config.conv_hidden_size, config.residual_kernel_size
        self.encoder = RealLengthWhisperEncoder(config.encoder_config)
        self.downsample = nn.Conv1d(d_model, hidden, config.downsample_kernel_size, stride=config.downsample_stride,
                                    padding=config.downsample_kernel_size // 2)
        self.conv_encoder = nn.ModuleList(ConvBlock(hidden, config.num_residual_units, k)
                                          for _ in range(config.num_conv_blocks))
        self.projection = nn.Conv1d(hidden, config.codebook_dim, config.projection_kernel_size,
                                    padding=config.projection_kernel_size // 2)
        self.quantizer = VectorQuantize(
            dim=config.codebook_dim, codebook_size=config.codebook_size,
            decay=config.ema_decay,
            kmeans_init=config.kmeans_init, kmeans_iters=config.kmeans_iters,
            threshold_ema_dead_code=config.dead_code_threshold,
            commitment_weight=0.0,  # computed here, masked, in eval mode too
            rotation_trick=False,  # the paper's plain straight-through estimator
        )
        # training only: mirrored decoder back to 50 Hz, and the LLM adapter
        self.decoder_input = nn.Conv1d(config.codebook_dim, hidden, config.projection_kernel_size,
                                       padding=config.projection_kernel_size // 2)
        self.conv_decoder = nn.ModuleList(ConvBlock(hidden, config.num_residual_units, k, mirrored=True)
                                          for _ in range(config.num_conv_blocks))
        self.upsample = nn.ConvTranspose1d(hidden, d_model, config.downsample_kernel_size,
                                           stride=config.downsample_stride,
                                           padding=config.downsample_kernel_size // 2,
                                           output_padding=config.downsample_stride - 1)
        self.adapter_linear = nn.Linear(config.codebook_dim, config.llm_hidden_size)
        self.adapter_conv = nn.Conv1d(config.llm_hidden_size, config.llm_hidden_size, config.adapter_kernel_size,
                                      padding=config.adapter_kernel_size // 2)
        self.post_init()
        if config.freeze_encoder:
            self.encoder.requires_grad_(False)
        if config.kmeans_tokens:  # the quantizer is frozen in `quantize`; conv_encoder is empty (the config checks)
            self.downsample.requires_grad_(False)
            self.projection.requires_grad_(False)

    def _init_weights(self, module):
        super()._init_weights(module)  # the encoder (a PreTrainedModel) initialises itself
        if isinstance(module, VectorQuantize):  # non-persistent: from_pretrained leaves it uninitialised
            init.zeros_(module.zero)
        if self.config.kmeans_tokens and module is self.downsample:
            # token t = (frame 2t + frame 2t+1) / 2: with "same" padding, tap j reads frame 2t + j - kernel // 2
            centre = self.config.downsample_kernel_size // 2
            taps = torch.zeros_like(module.weight)
            taps[..., centre : centre + 2] = 0.5 * torch.eye(taps.shape[0], dtype=taps.dtype)[..., None]
            init.copy_(module.weight, taps)
            init.zeros_(module.bias)
        if self.config.kmeans_tokens and module is self.projection:
            init.dirac_(module.weight)  # the identity: the centre tap is the unit matrix
            init.zeros_(module.bias)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.config.freeze_encoder:
            self.encoder.eval()
        return self

    @classmethod
    def from_whisper(cls, whisper: str | os.PathLike | PreTrainedModel, config: USTokenizerConfig | None = None,
                     **config_kwargs) -> USTokenizerModel:
        """A tokenizer whose encoder holds a Whisper checkpoint's weights (the rest freshly initialised).
        `config` (e.g. `USTokenizerConfig.tiny()`) and `config_kwargs` give the other fields; the
        `encoder_config` always comes from the checkpoint."""
        encoder = RealLengthWhisperEncoder.from_whisper(whisper)
        fields = {**(config.to_dict() if config is not None else {}), **config_kwargs,
                  "encoder_config": encoder.config}
        model = cls(USTokenizerConfig(**{k: v for k, v in fields.items() if k not in ("auto_map", "model_type")}))
        model.encoder.load_state_dict(encoder.state_dict())
        return model

    def run_encoder(self, input_features: torch.Tensor, attention_mask: torch.Tensor | None = None):
        """-> (encoder output `[batch, frames_50hz, d_model]`, its lengths `[batch]`); no grad when frozen."""
        if attention_mask is None:
            attention_mask = torch.ones(input_features.shape[0], input_features.shape[-1], dtype=torch.long,
                                        device=input_features.device)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.config.freeze_encoder):
            hidden = self.encoder(input_features, attention_mask).last_hidden_state
        return hidden, self.encoder.output_lengths(attention_mask.sum(-1))

    def latents(self, encoder_hidden_states: torch.Tensor, encoder_lengths: torch.Tensor):
        """encoder output `[batch, frames_50hz, d_model]` -> (pre-VQ latents `[batch, tokens, codebook_dim]`,
        token lengths `[batch]`, mask `[batch, tokens]` bool)."""
        hidden = (encoder_hidden_states.transpose(1, 2)
                  * lengths_to_mask(encoder_lengths, encoder_hidden_states.shape[1])[:, None])
        hidden = self.downsample(hidden)
        token_lengths = conv_output_lengths(encoder_lengths, self.config.downsample_stride)
        mask = lengths_to_mask(token_lengths, hidden.shape[-1])
        hidden = hidden * mask[:, None]
        for block in self.conv_encoder:
            hidden = block(hidden, mask[:, None])
        if not self.config.kmeans_tokens:  # k-means tokens cluster the pair means themselves, not their ELU
            hidden = nn.functional.elu(hidden)
        latents = self.projection(hidden * mask[:, None]) * mask[:, None]
        return latents.transpose(1, 2), token_lengths, mask

    def quantize(self, latents: torch.Tensor, mask: torch.Tensor, update_codebook: bool = True):
        """latents `[batch, tokens, codebook_dim]` -> (quantized (straight-through in training), ids with
        `ids_pad_value` on padding), in fp32; the EMA/dead-code update runs in training mode only, and never on
        the fixed codebook of `kmeans_tokens`."""
        freeze_codebook = not update_codebook or self.config.kmeans_tokens
        with torch.autocast(device_type=latents.device.type, enabled=False):
            quantized, ids, _ = self.quantizer(latents.float(), mask=mask, freeze_codebook=freeze_codebook)
        return quantized.to(latents.dtype), ids.masked_fill(~mask, self.config.ids_pad_value)

    @torch.no_grad()
    def set_codebook(self, centroids: torch.Tensor) -> None:
        """Make `centroids` `[codebook_size, codebook_dim]` the codebook: code k quantizes to `centroids[k]` and a
        latent gets the id of its nearest centroid (Euclidean, as the codebook's own k-means). The EMA statistics
        restart from them, and a pending first-batch k-means (`kmeans_init`) is skipped."""
        self.quantizer.codebook = centroids
        ema = self.quantizer._codebook  # the EMA statistics behind the codebook: embed = embed_avg / cluster_size
        ema.embed_avg.copy_(centroids * ema.cluster_size[..., None])
        ema.initted.fill_(True)

    def adapt(self, quantized: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Training only: quantized latents `[batch, tokens, codebook_dim]` -> LLM input embeddings
        `[batch, tokens, llm_hidden_size]` (Linear, then Conv1d over time), zero past each length."""
        valid = mask[..., None]
        hidden = self.adapter_linear(quantized) * valid
        return self.adapter_conv(hidden.transpose(1, 2)).transpose(1, 2) * valid

    @torch.no_grad()
    def code_embeddings(self) -> torch.Tensor:
        """What the adapter feeds the LLM for each code, as one embedding per code `[codebook_size, llm_hidden_size]`
        (to start a DualSpeechLM's `<a_k>` rows from): the Linear of code k through the Conv1d's centre tap, plus the
        side taps applied to the mean code's Linear output (a token's neighbours, on average) and the bias."""
        codes = self.quantizer.get_output_from_indices(torch.arange(self.config.codebook_size, device=self.device))
        hidden = self.adapter_linear(codes.to(self.adapter_linear.weight.dtype))
        taps = self.adapter_conv.weight  # [out, in, kernel]
        centre = self.config.adapter_kernel_size // 2
        side_taps = taps.sum(-1) - taps[..., centre]
        return hidden @ taps[..., centre].T + hidden.mean(0) @ side_taps.T + self.adapter_conv.bias

    @torch.no_grad()
    def encode(self, input_features: torch.Tensor,
               attention_mask: torch.Tensor | None = None) -> USTokenizerEncoderOutput:
        """input_features `[batch, n_mels, mel_frames]`, attention_mask `[batch, mel_frames]` ->
        ids `[batch, ceil(max mel_frames / 4)]` and lengths `[batch]` (ceil(mel_frames / 4) each)."""
        return self.encode_cached(*self.run_encoder(input_features, attention_mask))

    @torch.no_grad()
    def encode_cached(self, encoder_hidden_states: torch.Tensor,
                      encoder_lengths: torch.Tensor) -> USTokenizerEncoderOutput:
        """`encode` from an encoder output `[batch, frames_50hz, d_model]` + lengths `[batch]` (a cache)."""
        latents, lengths, mask = self.latents(encoder_hidden_states, encoder_lengths)
        return USTokenizerEncoderOutput(ids=self.quantize(latents, mask, update_codebook=False)[1], lengths=lengths)

    def forward(
        self,
        input_features: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_lengths: torch.Tensor | None = None,
    ) -> USTokenizerOutput:
        """Training pass from log-mel (`input_features` + `attention_mask`, as `encode`) or from a cached
        encoder output (`encoder_hidden_states` `[batch, frames_50hz, d_model]` + `encoder_lengths` `[batch]`)."""
        if (input_features is None) == (encoder_hidden_states is None):
            raise ValueError("pass exactly one of input_features or encoder_hidden_states")
        if encoder_hidden_states is None:
            encoder_hidden_states, encoder_lengths = self.run_encoder(input_features, attention_mask)
        elif encoder_lengths is None:
            encoder_lengths = torch.full(encoder_hidden_states.shape[:1], encoder_hidden_states.shape[1],
                                         device=encoder_hidden_states.device)
        latents, token_lengths, mask = self.latents(encoder_hidden_states, encoder_lengths)
        quantized, codes = self.quantize(latents, mask)
        valid = mask[..., None]
        commitment = (((latents.float() - quantized.detach().float()) ** 2 * valid).sum()
                      / (valid.sum() * latents.shape[-1]))

        mask_c = mask[:, None]
        hidden = self.decoder_input(quantized.transpose(1, 2)) * mask_c
        for block in self.conv_decoder:
            hidden = block(hidden, mask_c)
        frames = encoder_hidden_states.shape[1]
        reconstructed = self.upsample(nn.functional.elu(hidden) * mask_c)[..., :frames].transpose(1, 2)
        valid_50 = lengths_to_mask(encoder_lengths, frames)[..., None]
        target = encoder_hidden_states.detach().float()
        reconstruction = ((reconstructed.float() - target) ** 2 * valid_50).sum() / (valid_50.sum() * target.shape[-1])

        adapter = self.adapt(quantized, mask)
        loss = self.config.commitment_weight * commitment + self.config.reconstruction_weight * reconstruction
        return USTokenizerOutput(
            loss=loss, commitment_loss=commitment, reconstruction_loss=reconstruction, codes=codes,
            quantized_latents=quantized, adapter_embeddings=adapter, token_lengths=token_lengths,
            encoder_hidden_states=encoder_hidden_states, encoder_lengths=encoder_lengths,
        )


register_auto_classes(USTokenizerConfig, USTokenizerModel)

__all__ = ["RealLengthWhisperEncoder", "USTokenizerModel", "USTokenizerOutput", "USTokenizerEncoderOutput",
           "lengths_to_mask"]
