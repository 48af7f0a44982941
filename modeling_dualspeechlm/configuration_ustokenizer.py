"""Configuration of the USTokenizer: a frozen Whisper encoder + a 25 Hz single-codebook VQ.

Defaults are the paper's (arXiv 2508.08961): Whisper-medium encoder (d=1024), a stride-2 conv
(50 -> 25 Hz), 2 blocks x 2 residual units (ELU, k=3), a k=3 projection, one EMA codebook of 1024
entries of dim 1024 (decay 0.8), loss = 1 * commitment + 45 * reconstruction + 5 * understanding.
"""

from __future__ import annotations

import math

from transformers import PretrainedConfig, WhisperConfig
from transformers.configuration_utils import SubConfigSpec

# Whisper encoder shapes (the decoder sizes only matter when a full checkpoint is converted).
WHISPER_MEDIUM = dict(d_model=1024, encoder_layers=24, encoder_attention_heads=16, encoder_ffn_dim=4096,
                      decoder_layers=24, decoder_attention_heads=16, decoder_ffn_dim=4096)
WHISPER_TINY_EN = dict(d_model=384, encoder_layers=4, encoder_attention_heads=6, encoder_ffn_dim=1536,
                       decoder_layers=4, decoder_attention_heads=6, decoder_ffn_dim=1536, vocab_size=51864)


def untuple_auto_map(serialized: dict) -> dict:
    """transformers' `custom_object_save` takes every class whose name contains "Tokenizer" for a text
    tokenizer and writes its `auto_map` entry as a (slow, fast) pair, which the Auto classes then fail
    to load; write the plain "module.Class" string instead."""
    if "auto_map" in serialized:
        serialized["auto_map"] = {key: value[0] if isinstance(value, (list, tuple)) else value
                                  for key, value in serialized["auto_map"].items()}
    return serialized


class USTokenizerConfig(PretrainedConfig):
    r"""Configuration of [`USTokenizerModel`].

    Args:
        encoder_config (`WhisperConfig | dict | None`): the Whisper encoder (None: Whisper-medium shapes).
        freeze_encoder (`bool`, defaults to True): keep the Whisper encoder frozen (no gradients, eval mode).
        downsample_kernel_size, downsample_stride (`int`, 3 and 2): the conv from the encoder's 50 Hz to 25 Hz.
        conv_hidden_size (`int`, 1024): channels of the residual conv encoder / mirrored decoder.
        num_conv_blocks, num_residual_units (`int`, 2 and 2): residual blocks, and ELU residual units per block.
        residual_kernel_size, projection_kernel_size (`int`, 3 and 3): kernels of the residual units and of
            the projection conv to `codebook_dim`.
        codebook_size (`int`, 1024), codebook_dim (`int`, 1024): the single VQ codebook.
        ema_decay (`float`, 0.8): EMA decay of the codebook update.
        dead_code_threshold (`float`, 2.0): codes whose EMA cluster size drops below this are replaced by
            random latents of the batch (0 disables).
        kmeans_init (`bool`, False), kmeans_iters (`int`, 10): initialise the codebook by k-means on the first batch;
            `kmeans_iters` also counts the Lloyd iterations of the `kmeans_tokens` fit.
        kmeans_tokens (`bool`, False): the tokens are plain k-means clusters of the encoder output brought to 25 Hz
            (a semantic-token baseline): the downsample conv computes the mean of each pair of 50 Hz frames (a last
            unpaired frame is halved: the conv's zero padding stands in for its partner), the projection is the
            identity and skips its ELU, the codebook holds the centroids, and all three stay frozen (no gradient, no
            EMA update, no dead-code replacement). Stage 1 fits the centroids (`USTokenizerModel.set_codebook`).
            Needs `num_conv_blocks=0`, `downsample_stride=2`, `downsample_kernel_size >= 3` and
            `conv_hidden_size == codebook_dim ==` the encoder's `d_model`.
        commitment_weight, reconstruction_weight, understanding_weight (`float`, 1, 45, 5): loss weights;
            the understanding loss is computed by the training recipe through a frozen LLM.
        transcript_ctc_weight (`float`, 0: off, as in the paper): weight of a training-only character CTC of the
            spoken words, read from the quantized latents by a small conv head (two CTC slots per token). It makes
            the tokens keep the words when the text LLM is too small to teach them through the understanding loss.
        llm_hidden_size (`int`, 2048, Llama-3.2-1B): width of the adapter output (LLM input embeddings).
        adapter_kernel_size (`int`, 3): the adapter's Conv1d after its Linear.
        ids_pad_value (`int`, -1): the id written at padded token positions by `encode` / `forward`.
    """

    model_type = "dualspeechlm_ustokenizer"
    sub_configs_defaults = {"encoder_config": SubConfigSpec(WhisperConfig, init_kwargs=WHISPER_MEDIUM)}

    encoder_config: dict | WhisperConfig | None = None
    freeze_encoder: bool = True
    downsample_kernel_size: int = 3
    downsample_stride: int = 2
    conv_hidden_size: int = 1024
    num_conv_blocks: int = 2
    num_residual_units: int = 2
    residual_kernel_size: int = 3
    projection_kernel_size: int = 3
    codebook_size: int = 1024
    codebook_dim: int = 1024
    ema_decay: float = 0.8
    dead_code_threshold: float = 2.0
    kmeans_init: bool = False
    kmeans_iters: int = 10
    kmeans_tokens: bool = False
    commitment_weight: float = 1.0
    reconstruction_weight: float = 45.0
    understanding_weight: float = 5.0
    transcript_ctc_weight: float = 0.0
    llm_hidden_size: int = 2048
    adapter_kernel_size: int = 3
    ids_pad_value: int = -1

    def __post_init__(self, **kwargs):
        for name in ("downsample_kernel_size", "residual_kernel_size", "projection_kernel_size",
                     "adapter_kernel_size"):
            if getattr(self, name) < 1 or getattr(self, name) % 2 == 0:
                raise ValueError(f"{name} must be odd and positive (same-length convs), got {getattr(self, name)}")
        for name in ("downsample_stride", "conv_hidden_size", "codebook_size", "codebook_dim", "llm_hidden_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {self.ema_decay}")
        if 0 <= self.ids_pad_value < self.codebook_size:
            raise ValueError(f"ids_pad_value ({self.ids_pad_value}) must not be a valid code id "
                             f"(0..{self.codebook_size - 1})")
        super().__post_init__(**kwargs)  # encoder_config becomes a WhisperConfig here
        if self.kmeans_tokens:  # the token path must compute pair mean -> nearest centroid exactly
            d_model = self.encoder_config.d_model
            needed = dict(num_conv_blocks=0, downsample_stride=2, conv_hidden_size=d_model, codebook_dim=d_model)
            wrong = {name: getattr(self, name) for name, value in needed.items() if getattr(self, name) != value}
            if self.downsample_kernel_size < 3:  # a tap on each frame of a pair
                wrong["downsample_kernel_size"] = self.downsample_kernel_size
            if wrong:  # a residual conv block ends in an ELU, which bends the mean
                raise ValueError(f"kmeans_tokens needs a token path that computes the mean of each pair of the "
                                 f"encoder's 50 Hz frames and hands it unchanged to the codebook: {needed} (the "
                                 f"widths equal to the encoder's d_model) and downsample_kernel_size >= 3; "
                                 f"got {wrong}")

    def to_dict(self) -> dict:
        return untuple_auto_map(super().to_dict())

    @property
    def mel_frames_per_token(self) -> int:
        """Whisper's conv2 halves the 100 Hz mel rate; the downsample conv divides it by its stride."""
        return 2 * self.downsample_stride

    @property
    def tokens_per_second(self) -> float:
        """Whisper's log-mel runs at 100 frames per second: 25 tokens per second with the defaults."""
        return 100 / self.mel_frames_per_token

    @property
    def max_mel_frames(self) -> int:
        """The encoder's position limit in mel frames (3000 = 30 s for every Whisper size)."""
        return 2 * self.encoder_config.max_source_positions

    def num_tokens(self, mel_frames: int) -> int:
        """Tokens for `mel_frames` log-mel frames: ceil(frames / 4) with the defaults (25 per second)."""
        return math.ceil(math.ceil(mel_frames / 2) / self.downsample_stride)

    @classmethod
    def paper(cls, **overrides) -> USTokenizerConfig:
        """The paper's tokenizer: Whisper-medium encoder, 1024 x 1024 codebook, Llama-3.2-1B width."""
        return cls(**overrides)

    @classmethod
    def tiny(cls, **overrides) -> USTokenizerConfig:
        """Whisper tiny.en encoder (d=384); the stride-2 conv and the projection only (no residual conv
        blocks), 384 channels, 1024 codes of dim 384: the codebook as wide as the encoder, as the paper's
        1024 is Whisper-medium's width; and the transcript CTC at weight 5, which the paper does not need:
        its frozen Llama-3.2-1B teaches the tokens the words, a small LLM trained here cannot. Each choice kept
        more of the words in stage 1 on the embedded corpus (docs/experiments/2026-11-26-tokenizer-probes.md and
        2026-11-26-transcript-ctc.md).
        Set `llm_hidden_size` to the hidden size of the LLM the adapter feeds."""
        defaults = dict(encoder_config=WhisperConfig(**WHISPER_TINY_EN), num_conv_blocks=0, conv_hidden_size=384,
                        codebook_dim=384, transcript_ctc_weight=5.0, llm_hidden_size=576)
        return cls(**{**defaults, **overrides})


__all__ = ["USTokenizerConfig", "WHISPER_MEDIUM", "WHISPER_TINY_EN", "untuple_auto_map"]
