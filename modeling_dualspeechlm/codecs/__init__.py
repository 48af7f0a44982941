"""Acoustic codecs: the interface, the embedded default and adapters for transformers' codecs."""

from .auto import load_codec
from .base import CodecDecoderOutput, CodecEncoderOutput, SpeechCodecMixin, validate_waveforms
from .configuration_mel_codec import MelCodecConfig
from .modeling_mel_codec import MelCodecModel
from .transformers_codecs import SUPPORTED_TRANSFORMERS_CODECS, TransformersCodec

__all__ = [
    "CodecDecoderOutput", "CodecEncoderOutput", "MelCodecConfig", "MelCodecModel", "SUPPORTED_TRANSFORMERS_CODECS",
    "SpeechCodecMixin", "TransformersCodec", "load_codec", "validate_waveforms",
]
