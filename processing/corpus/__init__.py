"""The embedded speech corpus: synthesized offline with flite, festival and espeak-ng, saved as a `datasets` folder."""

from .builder import (
    AUDIO_COLUMNS,
    CONFIG_TASKS,
    SPLITS,
    CorpusConfig,
    build_corpus,
    corpus_audio,
    corpus_folder,
    load_corpus,
)
from .synthesis import SAMPLING_RATE, EngineNotFoundError, Voice, synthesize, synthesize_many
from .voices import STYLE_DESCRIPTIONS, TRAIN_VOICES, UNSEEN_VOICE

__all__ = [
    "AUDIO_COLUMNS", "CONFIG_TASKS", "SPLITS", "SAMPLING_RATE", "STYLE_DESCRIPTIONS", "TRAIN_VOICES",
    "UNSEEN_VOICE", "CorpusConfig", "EngineNotFoundError", "Voice", "build_corpus",
    "corpus_audio", "corpus_folder", "load_corpus", "synthesize", "synthesize_many",
]
