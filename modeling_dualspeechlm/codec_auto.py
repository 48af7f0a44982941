"""`load_codec`: open any codec folder (or Hub repo) as a `SpeechCodecMixin`; `codec_from_config`: build one, with
random weights, from its config (how DualSpeechLM builds its `codec_model` before loading its weights).

    codec = load_codec("path/to/codec")             # the embedded DualSpeechLM codec, or
    codec = load_codec("facebook/encodec_24khz", num_codebooks=8)  # a wrapped transformers codec
    codes = codec.encode(waveforms, lengths).codes  # [batch, num_codebooks, frames]; waveforms at codec.sampling_rate
"""

from __future__ import annotations

import os

from transformers import AutoConfig, AutoModel, PretrainedConfig
from transformers.models.auto.modeling_auto import MODEL_MAPPING

from .codec_base import SpeechCodecMixin
from .modeling_mel_codec import MelCodecModel
from .transformers_codecs import SUPPORTED_TRANSFORMERS_CODECS, TransformersCodec

__all__ = ["SUPPORTED_TRANSFORMERS_CODECS", "codec_from_config", "load_codec"]

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
    model_class = _embedded_codec_class(config, name_or_path)
    given = [k for k in _ADAPTER_KWARGS if k in kwargs]
    if given:
        raise ValueError(f"{given} only apply to wrapped transformers codecs, not to {model_class.__name__}")
    return model_class.from_pretrained(name_or_path, **kwargs).eval()


def codec_from_config(config: PretrainedConfig, num_codebooks: int | None = None,
                      sampling_rate: int | None = None) -> SpeechCodecMixin:
    """A codec with fresh weights from its config: a transformers codec's (wrapped in `TransformersCodec`, with
    `num_codebooks` and `sampling_rate` for the adapter) or the embedded one's (which dictates both itself)."""
    if config.model_type in SUPPORTED_TRANSFORMERS_CODECS:
        return TransformersCodec(AutoModel.from_config(config), num_codebooks=num_codebooks,
                                 **({} if sampling_rate is None else {"sampling_rate": sampling_rate}))
    model_class = _embedded_codec_class(config, "this config")
    if not isinstance(config, model_class.config_class):  # another copy of the class (remote code loads one per file)
        config = model_class.config_class.from_dict(config.to_dict())
    return model_class(config)


def _embedded_codec_class(config: PretrainedConfig, where) -> type:
    """The AutoModel class of `config` when it is a `SpeechCodecMixin` (the embedded codec found by its model type
    too); a ValueError naming what is supported otherwise."""
    model_class = MODEL_MAPPING.get(type(config), None)
    if isinstance(model_class, type) and issubclass(model_class, SpeechCodecMixin):
        return model_class
    if config.model_type == MelCodecModel.config_class.model_type:
        return MelCodecModel
    raise ValueError(
        f"{where} holds a {config.model_type!r} model, which is not a speech codec. Supported: a model "
        f"registered with AutoModel that subclasses SpeechCodecMixin (the embedded DualSpeechLM codec) or one of "
        f"transformers' codecs {', '.join(SUPPORTED_TRANSFORMERS_CODECS)}"
    )
