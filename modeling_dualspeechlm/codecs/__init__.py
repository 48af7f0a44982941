"""Acoustic codecs: the interface, the embedded default and adapters for transformers' codecs.

The modules live beside the model files (a saved model folder carries them flat, as remote code); this package
gathers the public names."""

from ..codec_auto import codec_from_config, load_codec
from ..codec_base import CodecDecoderOutput, CodecEncoderOutput, SpeechCodecMixin, validate_waveforms
from ..configuration_mel_codec import MelCodecConfig
from ..modeling_mel_codec import MelCodecModel
from ..transformers_codecs import SUPPORTED_TRANSFORMERS_CODECS, TransformersCodec

__all__ = [
    "CodecDecoderOutput", "CodecEncoderOutput", "MelCodecConfig", "MelCodecModel", "SUPPORTED_TRANSFORMERS_CODECS",
    "SpeechCodecMixin", "TransformersCodec", "codec_from_config", "load_codec", "validate_waveforms",
]
