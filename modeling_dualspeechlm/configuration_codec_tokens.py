"""Configuration of the codec tokens: one codebook of an acoustic codec as the speech tokens an LLM reads and writes.

The paper's Baseline-Acoustic (arXiv 2508.08961, Table 1) gives its LLM acoustic tokens both ways, WavTokenizer's
single codebook, where DualSpeechLM reads USTokens. `CodecTokensModel` stands where the USTokenizer stands for such a
model: audio in, one id per codec frame out.
"""

from __future__ import annotations

from transformers import AutoConfig, PretrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .configuration_mel_codec import MelCodecConfig  # noqa: F401  (registered: `codec_config` may be one)
from .registration import register_config


class CodecTokensConfig(PretrainedConfig):
    r"""Configuration of [`CodecTokensModel`].

    Args:
        codec_config (`PretrainedConfig | dict | None`): the codec (the embedded `MelCodecConfig` or one of
            transformers' codecs, `load_codec`'s list; None: the embedded codec's defaults).
        codebook (`int`, 0): which of its codebooks gives the tokens (0: the first and coarsest of a residual codec).
        codebook_size (`int`, 1024): ids per token, the codec's codes per codebook.
        tokens_per_second (`float`, 50.0): the codec's frame rate.
    """

    model_type = "dualspeechlm_codec_tokens"
    sub_configs_defaults = {"codec_config": SubConfigSpec(AutoConfig, model_type="dualspeechlm_mel_codec")}

    codec_config: dict | PretrainedConfig | None = None
    codebook: int = 0
    codebook_size: int = 1024
    tokens_per_second: float = 50.0

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.codebook < 0 or self.codebook_size < 1 or self.tokens_per_second <= 0:
            raise ValueError(f"codebook must be >= 0, codebook_size and tokens_per_second positive; got "
                             f"{self.codebook}, {self.codebook_size}, {self.tokens_per_second}")


register_config(CodecTokensConfig)

__all__ = ["CodecTokensConfig"]
