"""DualSpeechLM for the Hugging Face ecosystem.

Importing the package registers its configs, models, feature extractor and processor with transformers'
Auto classes (`AutoConfig`, `AutoModel`, `AutoFeatureExtractor`, `AutoProcessor`), so a saved folder loads
with them without `trust_remote_code`.
"""

__version__ = "0.1.0.dev0"

from .codecs import MelCodecConfig, MelCodecModel, load_codec
from .configuration_codec_tokens import CodecTokensConfig
from .configuration_dualspeechlm import AcousticGPTConfig, DualSpeechLMConfig
from .configuration_ustokenizer import USTokenizerConfig
from .feature_extraction_ustokenizer import USTokenizerFeatureExtractor
from .modeling_acoustic_gpt import AcousticGPT
from .modeling_codec_tokens import CodecTokensModel, load_speech_tokenizer
from .modeling_dualspeechlm import DualSpeechLMForConditionalGeneration
from .modeling_ustokenizer import USTokenizerModel
from .pipelines_dualspeechlm import DualSpeechLMSpeechRecognitionPipeline, DualSpeechLMTextToSpeechPipeline
from .processing_dualspeechlm import DualSpeechLMProcessor
from .speaker_encoder import SpeakerEncoderConfig, SpeakerEncoderModel

__all__ = [
    "AcousticGPT", "AcousticGPTConfig", "CodecTokensConfig", "CodecTokensModel", "DualSpeechLMConfig",
    "DualSpeechLMForConditionalGeneration", "DualSpeechLMProcessor", "DualSpeechLMSpeechRecognitionPipeline",
    "DualSpeechLMTextToSpeechPipeline",
    "MelCodecConfig", "MelCodecModel", "SpeakerEncoderConfig", "SpeakerEncoderModel", "USTokenizerConfig",
    "USTokenizerFeatureExtractor", "USTokenizerModel", "load_codec", "load_speech_tokenizer",
]
