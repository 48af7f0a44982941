"""`load_codec`: open any codec folder (or Hub repo) as a `SpeechCodecMixin`.

    codec = load_codec("path/to/codec")             # the embedded DualSpeechLM codec, or
    codec = load_codec("facebook/encodec_24khz", num_codebooks=8)  # a wrapped transformers codec
    codes = codec.encode(waveforms, lengths).codes  # [batch, num_codebooks, frames]; waveforms at codec.sampling_rate
"""

from __future__ import annotations

import os

from transformers import AutoConfig
from transformers.models.auto.modeling_auto import MODEL_MAPPING

from .base import SpeechCodecMixin
from .transformers_codecs import SUPPORTED_TRANSFORMERS_CODECS, TransformersCodec

__all__ = ["SUPPORTED_TRANSFORMERS_CODECS", "load_codec"]

_ADAPTER_KWARGS = ("num_codebooks", "per_item", "sampling_rate")
_CONFIG_KWARGS = ("cache_dir", "revision", "token", "local_files_only", "subfolder", "trust_remote_code")


def load_codec(name_or_path: str | os.PathLike, **kwargs) -> SpeechCodecMixin:
    """Load a codec from a folder or Hub repo.

    - a model whose AutoModel class already is a `SpeechCodecMixin` (the embedded codec) is returned as is;
    - an EnCodec / DAC / Mimi / X-Codec / WavTokenizer / Xcodec2 / NeuCodec model is wrapped in `TransformersCodec`
      (16 kHz in and out, resampled to the model's rates inside; `num_codebooks`, `per_item`, `sampling_rate` go to
      the adapter; saved adapter settings are used when not given);
    - anything else raises ValueError naming the supported model types.

    Other kwargs (`dtype`, `device_map`, `revision`, ...) go to `from_pretrained`.
    """
    config = AutoConfig.from_pretrained(name_or_path, **{k: kwargs[k] for k in _CONFIG_KWARGS if k in kwargs})
    if config.model_type in SUPPORTED_TRANSFORMERS_CODECS:
        return TransformersCodec.from_pretrained(name_or_path, **kwargs)
    model_class = MODEL_MAPPING.get(type(config), None)
    if isinstance(model_class, type) and issubclass(model_class, SpeechCodecMixin):
        given = [k for k in _ADAPTER_KWARGS if k in kwargs]
        if given:
            raise ValueError(f"{given} only apply to wrapped transformers codecs, not to {model_class.__name__}")
        return model_class.from_pretrained(name_or_path, **kwargs).eval()
    raise ValueError(
        f"{name_or_path} holds a {config.model_type!r} model, which is not a speech codec. Supported: a model "
        f"registered with AutoModel that subclasses SpeechCodecMixin (the embedded DualSpeechLM codec) or one of "
        f"transformers' codecs {', '.join(SUPPORTED_TRANSFORMERS_CODECS)}"
    )
