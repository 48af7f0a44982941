"""A text tokenizer trained on the corpus text, for the small LLMs trained here offline.

With the Hub reachable a user passes a pretrained LLM and its tokenizer; offline, the tiny preset
trains a byte-level BPE on the training text (every split's train text only, never test) and
wraps it as a `PreTrainedTokenizerFast`, so it saves and loads like any Hub tokenizer.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from dualspeechlm.tasks import AUDIO_END, AUDIO_START

SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}


def train_text_tokenizer(texts: Iterable[str], vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """A byte-level BPE of at most `vocab_size` entries (specials and `<audio>`/`</audio>` included)
    that prepends `<s>` to every encoded text. Raises ValueError when `texts` is empty."""
    texts = [text for text in texts if text.strip()]
    if not texts:
        raise ValueError("no text to train the tokenizer on")
    specials = list(SPECIAL_TOKENS.values()) + [AUDIO_START, AUDIO_END]
    backend = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(texts, trainer)
    bos = SPECIAL_TOKENS["bos_token"]
    backend.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A $B",
                                                           special_tokens=[(bos, backend.token_to_id(bos))])
    return PreTrainedTokenizerFast(tokenizer_object=backend, **SPECIAL_TOKENS,
                                   additional_special_tokens=[AUDIO_START, AUDIO_END])


__all__ = ["train_text_tokenizer", "SPECIAL_TOKENS"]
