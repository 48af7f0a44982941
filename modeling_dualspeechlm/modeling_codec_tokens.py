"""CodecTokensModel: audio -> one codebook of an acoustic codec, the speech tokens of the paper's Baseline-Acoustic.

    waveforms (16 kHz) ──codec.encode──> codes [num_codebooks, frames] ──row `config.codebook`──> ids (frame rate)

It takes the USTokenizer's place in a processor and in stage 3's token cache: it has a `config.codebook_size` and
`config.tokens_per_second`, and `reads_waveforms` tells them to give it audio (`tokenize`) rather than log-mel. The
codec is a frozen sub-model, saved with its weights. `load_speech_tokenizer` opens either kind of tokenizer folder.

Imports only torch, transformers and this folder (relatively), so a saved folder loads with trust_remote_code.
"""

from __future__ import annotations

import os

import torch
from transformers import AutoModel, PretrainedConfig, PreTrainedModel

from .codec_auto import codec_from_config
from .configuration_codec_tokens import CodecTokensConfig
from .configuration_ustokenizer import USTokenizerConfig
from .modeling_ustokenizer import USTokenizerModel
from .registration import register_auto_classes


class CodecTokensModel(PreTrainedModel):
    """A frozen codec (`codec_model`) whose codebook `config.codebook` gives one token per frame."""

    config_class = CodecTokensConfig
    main_input_name = "waveforms"
    reads_waveforms = True  # tokenizes audio (`tokenize`), not the Whisper log-mel a USTokenizer reads

    def __init__(self, config: CodecTokensConfig):
        super().__init__(config)
        self.codec_model = codec_from_config(config.codec_config, num_codebooks=config.codebook + 1)
        self.codec_model.requires_grad_(False)
        self.post_init()

    def _init_weights(self, module):
        pass  # the codec's weights are loaded or copied, never trained here

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`, frozen again (loading makes every parameter trainable)."""
        return super().from_pretrained(*args, **kwargs).requires_grad_(False)

    @classmethod
    def from_codec(cls, codec, codebook: int = 0) -> CodecTokensModel:
        """The tokens of codebook `codebook` of `codec` (a `SpeechCodecMixin`, e.g. from `load_codec`), with its
        weights."""
        if not 0 <= codebook < codec.num_codebooks:
            raise ValueError(f"codebook {codebook} is not one of the codec's {codec.num_codebooks}")
        config = CodecTokensConfig(codec_config=codec.codec_config, codebook=codebook,
                                   codebook_size=codec.codebook_size, tokens_per_second=float(codec.frame_rate))
        model = cls(config)
        model.codec_model.load_state_dict(codec.state_dict())
        return model.eval()

    def train(self, mode: bool = True):
        """As `nn.Module.train`, but the codec stays in eval mode (its quantizer would update its codebooks)."""
        super().train(mode)
        self.codec_model.eval()
        return self

    @torch.no_grad()
    def tokenize(self, waveforms: list[torch.Tensor], sampling_rate: int = 16000) -> list[list[int]]:
        """Token ids (0..codebook_size-1, `tokens_per_second` per second) of each 1-D waveform at the codec's
        sampling rate (16 kHz for the embedded codec and the adapters of transformers' codecs)."""
        codes = self.codec_model.encode_each(waveforms, sampling_rate=sampling_rate)
        return [row[self.config.codebook].tolist() for row in codes]

    def forward(self, waveforms: list[torch.Tensor], sampling_rate: int = 16000) -> list[list[int]]:
        return self.tokenize(waveforms, sampling_rate)


def load_speech_tokenizer(path: str | os.PathLike, **kwargs) -> USTokenizerModel | CodecTokensModel:
    """The speech tokenizer saved in `path` (a folder or Hub repo; `kwargs` go to `from_pretrained`): a USTokenizer or
    codec tokens, whichever its config names, in eval mode."""
    config_dict, _ = PretrainedConfig.get_config_dict(path, **kwargs)  # it reads the kwargs it knows, no others
    kinds = {USTokenizerConfig.model_type: USTokenizerModel, CodecTokensConfig.model_type: CodecTokensModel}
    if (model_class := kinds.get(config_dict.get("model_type"))) is None:
        raise ValueError(f"{path} holds a {config_dict.get('model_type')!r} model, not a speech tokenizer "
                         f"({' or '.join(kinds)})")
    return model_class.from_pretrained(path, **kwargs).eval()


register_auto_classes(CodecTokensConfig, CodecTokensModel, AutoModel)

__all__ = ["CodecTokensModel", "load_speech_tokenizer"]
