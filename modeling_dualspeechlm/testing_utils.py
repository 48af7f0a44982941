"""Tiny random DualSpeechLM parts for tests and device checks (as `transformers.testing_utils` serves transformers).

    model, processor = tiny_random_model_and_processor()

Every part is random and a few kilobytes: a 1-layer Llama with a byte-level BPE trained on `TINY_TEXTS`, a
USTokenizer with a 2-layer Whisper-shaped encoder, a 2-quantizer mel codec (Griffin-Lim), a speaker encoder and
an AcousticGPT of one layer. They fit each other as stage 3 builds them (`from_text_model` with the codec), so
everything a trained model does (build inputs, train a step, generate text and speech, save and load) runs on them
in well under a second.
"""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from dualspeechlm.processing.text_tokenizer import train_text_tokenizer  # the processing side: a test helper only

from .codecs import MelCodecConfig, MelCodecModel
from .configuration_ustokenizer import USTokenizerConfig
from .feature_extraction_ustokenizer import USTokenizerFeatureExtractor
from .modeling_dualspeechlm import DualSpeechLMForConditionalGeneration
from .modeling_ustokenizer import USTokenizerModel
from .processing_dualspeechlm import DualSpeechLMProcessor
from .speaker_encoder import SpeakerEncoderConfig, SpeakerEncoderModel

TINY_TEXTS = ["anna saw the cat", "who saw the cat?", "the dog sleeps", "el gato duerme"]


def tiny_random_model_and_processor(num_speech_tokens: int = 32, seed: int = 0):
    """(DualSpeechLMForConditionalGeneration, DualSpeechLMProcessor), random, in eval mode, on the CPU; the same
    weights for the same arguments."""
    torch.manual_seed(seed)
    tokenizer = train_text_tokenizer(TINY_TEXTS * 5, vocab_size=300)
    encoder = dict(d_model=32, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=64, decoder_layers=1,
                   decoder_attention_heads=2, decoder_ffn_dim=64)
    ustokenizer = USTokenizerModel(USTokenizerConfig(encoder_config=encoder, conv_hidden_size=16, codebook_dim=8,
                                                     codebook_size=num_speech_tokens, llm_hidden_size=16)).eval()
    codec = MelCodecModel(MelCodecConfig(hidden_size=16, latent_size=8, encoder_layers=1, decoder_layers=1,
                                         num_quantizers=2, codebook_size=64, vocoder="griffin_lim",
                                         griffin_lim_iterations=2)).eval()
    speaker_encoder = SpeakerEncoderModel(SpeakerEncoderConfig(hidden_size=16, stats_size=16, attention_size=8)).eval()
    llm = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=256, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id))
    model = DualSpeechLMForConditionalGeneration.from_text_model(
        llm, tokenizer, num_speech_tokens=num_speech_tokens,
        acoustic_config=dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32),
        codec=codec).eval()
    tokenizer.model_max_length = model.config.text_config.max_position_embeddings
    processor = DualSpeechLMProcessor(USTokenizerFeatureExtractor(), tokenizer, ustokenizer, speaker_encoder)
    return model, processor


def without_dropout(model: torch.nn.Module) -> torch.nn.Module:
    """`model` with every dropout probability set to 0 (nn.Dropout modules and attention's float `dropout`), so a
    forward pass in train mode draws no random masks: comparisons across devices or process counts hold exactly."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        elif isinstance(getattr(module, "dropout", None), float):
            module.dropout = 0.0
    return model


__all__ = ["TINY_TEXTS", "tiny_random_model_and_processor", "without_dropout"]
