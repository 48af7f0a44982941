"""Configurations of DualSpeechLM (arXiv 2508.08961) and of its AcousticGPT.

Defaults are the paper's: a Phi-3.5-mini backbone (Phi-3-mini shapes) whose vocabulary holds 1024
USTokens `<a_0>..<a_1023>` between `<audio>` / `</audio>`; an AcousticGPT of 6 layers, 8 heads,
d=1024 writing WavTokenizer codes (1 codebook of 4096, 40 frames/s at 24 kHz) after a prefix of
[speaker projection (512-d), adapter(LLM hidden states)]; loss = LLM CE + AcousticGPT CE (1:1);
Chain-of-Condition for TTS and VC; USTokens sampled at T 0.6 / top-p 0.9 (up to 400), codes
top-k 10 (up to 1000). The codec itself is a sub-config (`codec_config`, WavTokenizer's in `paper()`) and a
sub-model of DualSpeechLM, as in transformers' CSM.
"""

from __future__ import annotations

import copy
from dataclasses import field

from transformers import AutoConfig, PretrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .configuration_mel_codec import MelCodecConfig  # noqa: F401  (registered: `codec_config` may be one)

COC_MODES = ("prompt", "target", "both")  # Chain-of-Condition: which LLM positions condition AcousticGPT
ACOUSTIC_SHORTCUTS = ("num_codebooks", "codebook_size", "speaker_embedding_size")  # DualSpeechLMConfig kwargs


def speech_token_strings(num_speech_tokens: int) -> list[str]:
    """`["<audio>", "</audio>", "<a_0>", ..., "<a_{K-1}>"]`: the tokens DualSpeechLM adds to a text vocabulary, in
    order."""
    return ["<audio>", "</audio>", *(f"<a_{k}>" for k in range(num_speech_tokens))]


def check_positive(config: PretrainedConfig, *names: str) -> None:
    for name in names:
        if getattr(config, name) <= 0:
            raise ValueError(f"{type(config).__name__}.{name} must be positive, got {getattr(config, name)}")


class AcousticGPTConfig(PretrainedConfig):
    r"""Configuration of [`AcousticGPT`], the prefix LM that writes acoustic codec codes.

    Args:
        codebook_size (`int`, 4096): codes per codebook (WavTokenizer: 4096).
        num_codebooks (`int`, 1): residual codebooks written per frame (delay pattern when > 1).
        hidden_size, num_hidden_layers, num_attention_heads (`int`, 1024, 6, 8), intermediate_size (`int`, 4096).
        max_position_embeddings (`int`, 2048): learned positions for the prefix and the delayed code steps.
        dropout (`float`, 0.1): on embeddings, attention probabilities and residual branches.
        layer_norm_eps (`float`, 1e-5), initializer_range (`float`, 0.02).
        speaker_embedding_size (`int`, 512): the speaker-verification embedding projected to one prefix vector.
        condition_size (`int`, 3072): width of the LLM hidden states fed to the adapter (set by DualSpeechLMConfig).

    Token ids per codebook: codes `0..codebook_size-1`, then pad, no-speech, BOS, EOS (`vocab_size` in all).
    """

    model_type = "dualspeechlm_acoustic_gpt"

    codebook_size: int = 4096
    num_codebooks: int = 1
    hidden_size: int = 1024
    num_hidden_layers: int = 6
    num_attention_heads: int = 8
    intermediate_size: int = 4096
    max_position_embeddings: int = 2048
    dropout: float = 0.1
    layer_norm_eps: float = 1e-5
    initializer_range: float = 0.02
    speaker_embedding_size: int = 512
    condition_size: int = 3072

    def __post_init__(self, **kwargs):
        self.validate_fields()
        super().__post_init__(**kwargs)

    def validate_fields(self) -> None:
        check_positive(self, "codebook_size", "num_codebooks", "hidden_size", "num_hidden_layers",
                       "num_attention_heads", "intermediate_size", "max_position_embeddings", "speaker_embedding_size",
                       "condition_size")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                             f"({self.num_attention_heads})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    # the special ids follow the codes of every codebook
    pad_id = property(lambda self: self.codebook_size)
    no_speech_id = property(lambda self: self.codebook_size + 1)
    bos_id = property(lambda self: self.codebook_size + 2)
    eos_id = property(lambda self: self.codebook_size + 3)
    vocab_size = property(lambda self: self.codebook_size + 4)


class DualSpeechLMConfig(PretrainedConfig):
    r"""Configuration of [`DualSpeechLMForConditionalGeneration`].

    Args:
        text_config (`PretrainedConfig | dict | None`): the backbone LLM, any AutoModelForCausalLM config (None: Phi-3
            shapes). Its `vocab_size` already counts `<audio>`, `</audio>` and the USTokens.
        acoustic_config (`AcousticGPTConfig | dict | None`): AcousticGPT (None: the paper's). Its `condition_size` is
            set to the LLM's hidden size. `num_codebooks`, `codebook_size`, `speaker_embedding_size` may also be given
            here as keyword arguments and are read back as properties of this config.
        num_speech_tokens (`int`, 1024): K, the USToken vocabulary.
        audio_start_token_id, audio_end_token_id, speech_token_offset (`int | None`): ids of `<audio>`, `</audio>`
            and `<a_0>`; `<a_k>` is `speech_token_offset + k`. None: the last K + 2 ids of the text vocabulary, in
            the order `<audio>`, `</audio>`, `<a_0>`..`<a_{K-1}>` (what `from_text_model` appends).
        codec_config (`PretrainedConfig | dict | None`): the acoustic codec whose codes AcousticGPT writes and which
            turns them into audio: the embedded `MelCodecConfig` or one of transformers' codecs (`load_codec`'s list;
            the paper's is WavTokenizer, see `paper()`). The model holds that codec as `codec_model`, its weights
            saved with the model's. None: no codec, the model writes tokens and codes but no audio.
        codec_frame_rate (`float`, 40.0), codec_sampling_rate (`int`, 16000): the acoustic codec's code rate
            (WavTokenizer's 40/s) and the rate of the audio it reads and writes for the model (16 kHz: the adapter
            resamples WavTokenizer's own 24 kHz inside).
        understanding_tasks, generation_tasks (`tuple[str]`): task names `forward(tasks=...)` accepts; understanding
            items train AcousticGPT on [BOS, no-speech, EOS] with a zero speaker embedding.
        coc_tasks (`tuple[str]`, ("tts", "vc")): generation tasks trained with Chain-of-Condition; other generation
            tasks always condition on "both".
        coc_modes (`tuple[str]`, all of `COC_MODES`): the prefixes CoC draws from with equal probability
            (("both",) switches CoC off, the paper's ablation).
        llm_loss_weight, acoustic_loss_weight (`float`, 1.0 and 1.0).
        semantic_supervision (`bool`, True): the LLM's cross-entropy covers the target USTokens of generation items
            (the paper's semantic supervision loss). False leaves them out of it, the paper's ablation: the LLM then
            learns only the text answers, `</audio>` and EOS, while AcousticGPT still trains on the target USTokens.
        speech_generation (`dict`): GenerationConfig fields for the USTokens written by `generate_speech`.
        acoustic_generation (`dict`): `do_sample`, `temperature`, `top_k`, `top_p`, `max_new_tokens` (frames) for
            AcousticGPT.
    """

    model_type = "dualspeechlm"
    sub_configs_defaults = {
        "text_config": SubConfigSpec(AutoConfig, model_type="phi3", init_kwargs={"vocab_size": 32064 + 1026}),
        "acoustic_config": AcousticGPTConfig,
        "codec_config": SubConfigSpec(AutoConfig, model_type="wavtokenizer", optional=True),
    }

    text_config: dict | PretrainedConfig | None = None
    acoustic_config: dict | AcousticGPTConfig | None = None
    codec_config: dict | PretrainedConfig | None = None
    num_speech_tokens: int = 1024
    audio_start_token_id: int | None = None
    audio_end_token_id: int | None = None
    speech_token_offset: int | None = None
    codec_frame_rate: float = 40.0
    codec_sampling_rate: int = 16000
    understanding_tasks: tuple[str, ...] = ("asr", "s2tt", "ser", "sqa")
    generation_tasks: tuple[str, ...] = ("tts", "vc", "t2st", "sc")
    coc_tasks: tuple[str, ...] = ("tts", "vc")
    coc_modes: tuple[str, ...] = COC_MODES
    llm_loss_weight: float = 1.0
    acoustic_loss_weight: float = 1.0
    semantic_supervision: bool = True
    speech_generation: dict = field(default_factory=lambda: dict(
        do_sample=True, temperature=0.6, top_p=0.9, max_new_tokens=400))
    acoustic_generation: dict = field(default_factory=lambda: dict(do_sample=True, top_k=10, max_new_tokens=1000))

    def __post_init__(self, **kwargs):
        shortcuts = {name: kwargs.pop(name) for name in ACOUSTIC_SHORTCUTS if name in kwargs}
        if isinstance(self.acoustic_config, AcousticGPTConfig):
            self.acoustic_config = copy.deepcopy(self.acoustic_config)
            for name, value in shortcuts.items():
                setattr(self.acoustic_config, name, value)
        elif shortcuts:
            self.acoustic_config = {**(self.acoustic_config or {}), **shortcuts}
        super().__post_init__(**kwargs)  # builds the sub-configs
        self.acoustic_config.condition_size = self.text_config.hidden_size
        self.acoustic_config.validate_fields()
        vocab, k = self.text_config.vocab_size, self.num_speech_tokens
        check_positive(self, "num_speech_tokens", "codec_frame_rate", "codec_sampling_rate")
        if self.audio_start_token_id is None and self.audio_end_token_id is None and self.speech_token_offset is None:
            self.audio_start_token_id, self.audio_end_token_id, self.speech_token_offset = range(vocab - k - 2,
                                                                                                 vocab - k + 1)
        ids = {"audio_start_token_id": self.audio_start_token_id, "audio_end_token_id": self.audio_end_token_id,
               "speech_token_offset": self.speech_token_offset}
        if any(value is None for value in ids.values()):
            raise ValueError(f"set all three of {list(ids)} or none of them, got {ids}")
        if self.speech_token_offset + k > vocab or not all(0 <= value < vocab for value in ids.values()):
            raise ValueError(f"speech token ids {ids} with num_speech_tokens={k} do not fit the text vocabulary "
                             f"(text_config.vocab_size={vocab})")
        if (self.audio_start_token_id == self.audio_end_token_id or self.is_speech_token(self.audio_start_token_id)
                or self.is_speech_token(self.audio_end_token_id)):
            raise ValueError(f"<audio> and </audio> ({ids}) must be two ids outside the USToken range "
                             f"[{self.speech_token_offset}, {self.speech_token_offset + k})")
        self.validate_tasks()
        if self.llm_loss_weight < 0 or self.acoustic_loss_weight < 0:
            raise ValueError("loss weights must be non-negative")

    def validate_tasks(self) -> None:
        for name in ("understanding_tasks", "generation_tasks", "coc_tasks", "coc_modes"):
            setattr(self, name, tuple(getattr(self, name)))  # JSON gives lists
        if overlap := set(self.understanding_tasks) & set(self.generation_tasks):
            raise ValueError(f"tasks {sorted(overlap)} are listed both as understanding and as generation tasks")
        if extra := set(self.coc_tasks) - set(self.generation_tasks):
            raise ValueError(f"coc_tasks {sorted(extra)} are not generation tasks {self.generation_tasks}")
        if not self.coc_modes or set(self.coc_modes) - set(COC_MODES):
            raise ValueError(f"coc_modes must be a non-empty subset of {COC_MODES}, got {self.coc_modes}")

    num_codebooks = property(lambda self: self.acoustic_config.num_codebooks)
    codebook_size = property(lambda self: self.acoustic_config.codebook_size)
    speaker_embedding_size = property(lambda self: self.acoustic_config.speaker_embedding_size)

    def is_speech_token(self, ids):
        """True where `ids` (int or tensor) is a USToken `<a_k>`."""
        return (ids >= self.speech_token_offset) & (ids < self.speech_token_offset + self.num_speech_tokens)

    def speech_token_strings(self) -> list[str]:
        """`["<audio>", "</audio>", "<a_0>", ..., "<a_{K-1}>"]`, in the order `from_text_model` adds them."""
        return speech_token_strings(self.num_speech_tokens)

    @staticmethod
    def codec_kwargs(codec) -> dict:
        """The settings a `SpeechCodecMixin` codec dictates, its config included, e.g.
        `DualSpeechLMConfig.tiny(**DualSpeechLMConfig.codec_kwargs(codec))`."""
        return dict(num_codebooks=codec.num_codebooks, codebook_size=codec.codebook_size,
                    codec_frame_rate=float(codec.frame_rate), codec_sampling_rate=int(codec.sampling_rate),
                    codec_config=copy.deepcopy(codec.codec_config))

    @classmethod
    def paper(cls, **overrides) -> DualSpeechLMConfig:
        """Phi-3.5-mini shapes + 1024 USTokens, the paper's AcousticGPT on the codes of WavTokenizer (its 24 kHz,
        40 codes/s model with one codebook of 4096, read and written at 16 kHz)."""
        return cls(**{"codec_config": AutoConfig.for_model("wavtokenizer"), **overrides})

    @classmethod
    def tiny(cls, text_model_type: str = "llama", num_speech_tokens: int = 32, text_vocab_size: int = 64,
             text_overrides: dict | None = None, **overrides) -> DualSpeechLMConfig:
        """A CPU-test-sized model: a 2-layer, 32-wide backbone of `text_model_type` (any AutoConfig type: "llama",
        "qwen2", "phi3", ...; `text_overrides` update its fields) with `text_vocab_size` text ids followed by the
        speech tokens, and a 2-layer, 32-wide AcousticGPT on 2 codebooks of 64 codes (50 frames/s at 16 kHz, like
        the embedded codec)."""
        text_config = AutoConfig.for_model(text_model_type, **{
            **dict(vocab_size=text_vocab_size + num_speech_tokens + 2, hidden_size=32, intermediate_size=64,
                   num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                   pad_token_id=0, bos_token_id=1, eos_token_id=2),
            **(text_overrides or {})})
        acoustic_config = AcousticGPTConfig(codebook_size=64, num_codebooks=2, hidden_size=32, num_hidden_layers=2,
                                            num_attention_heads=4, intermediate_size=64, max_position_embeddings=512,
                                            dropout=0.0)
        defaults = dict(text_config=text_config, acoustic_config=acoustic_config, num_speech_tokens=num_speech_tokens,
                        codec_frame_rate=50.0, codec_sampling_rate=16000)
        return cls(**{**defaults, **overrides})


__all__ = ["ACOUSTIC_SHORTCUTS", "COC_MODES", "AcousticGPTConfig", "DualSpeechLMConfig", "speech_token_strings"]
