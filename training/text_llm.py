"""A small text LLM trained on the corpus text: the stand-in for a pretrained LLM offline.

The paper trains the USTokenizer through a frozen pretrained LLM (Llama-3.2-1B). With no Hub, the
tiny preset first trains a small Llama on the training text in the very prompts the tokenizer will
be trained with, the speech span holding the words as text ("USER: <audio>the cat sat</audio>
Transcribe the speech.\nASSISTANT: the cat sat"). The frozen LLM then knows the task formats and
how to answer from the span, and the tokenizer must learn speech embeddings the LLM reads like text.
"""

from __future__ import annotations

import random
from pathlib import Path

import datasets
import torch
from transformers import (
    DataCollatorForLanguageModeling,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TrainingArguments,
)

from dualspeechlm.processing.corpus import load_corpus
from dualspeechlm.tasks import answer_text, get_task, prompt_parts

from .trainer import LossTermsTrainer, precision_arguments

# subfolders of stage 1's output: the small text LLM trained before it, and the LLM trained along with the tokenizer
TEXT_LLM, UNDERSTANDING_LLM = "text_llm", "understanding_llm"


def understanding_examples(corpus_dir: str | Path, split: str = "train") -> list[dict]:
    """The understanding examples of the corpus `split` (ASR from `speech`, SER from `style`, SQA from
    `qa`): dicts with `config`, `index` (the row), `task`, `transcript` (the words spoken),
    `before` / `after` (the prompt around the speech span, `prompt_parts`) and `answer`."""
    examples = []
    for task in ("asr", "ser", "sqa"):
        config = get_task(task).corpus_config
        rows = load_corpus(corpus_dir, config)[split]
        rows = rows.remove_columns([c for c in rows.column_names if "audio" in c])
        for index, row in enumerate(rows):
            fields = {"question": row["question"]} if task == "sqa" else {}
            before, after = prompt_parts(task, **fields)
            spoken = row["passage"] if task == "sqa" else row["text"]
            examples.append(dict(config=config, index=index, task=task, transcript=spoken, before=before,
                                 after=after, answer=row[get_task(task).answer_column]))
    return examples


def stage3_task_documents(corpus_dir: str | Path, split: str = "train") -> list[str]:
    """Text documents of the stage-3 tasks stage 1 does not train on: S2TT with the English words in the
    speech span and the translation as its answer, and the prompts of the speech-writing tasks (TTS, T2ST,
    VC, SC; their answers are speech, so the documents end with the prompt). They bring the Spanish and
    French words and every instruction into the tokenizer's vocabulary and the LLM's prior."""
    documents = []
    for row in load_corpus(corpus_dir, "translation")[split].select_columns(["text", "language", "translation"]):
        before, after = prompt_parts("s2tt", language=row["language"])
        documents.append(before + row["text"] + after + answer_text(row["translation"]))
        documents.append(prompt_parts("t2st", language=row["language"], text=row["text"])[0])
    documents += [prompt_parts("tts", text=text)[0] for text in load_corpus(corpus_dir, "speech")[split]["text"]]
    before, after = prompt_parts("vc")
    documents += [before + text + after for text in load_corpus(corpus_dir, "vc")[split]["text"]]
    qa = load_corpus(corpus_dir, "qa")[split].select_columns(["passage", "question"])
    before, after = prompt_parts("sc")
    documents += [before + row["passage"] + " " + row["question"] + after for row in qa]
    return documents


def text_llm_corpus(examples: list[dict], seed: int = 0) -> list[str]:
    """Text-only training documents: each example's prompt with its transcript in the speech span,
    plus the answer (SER answers are left out: text carries no speaking style), and as many
    transcription prompts over random word strings from the same vocabulary. A model trained on the
    sentences alone answers from its language prior (it rewrote a quarter of the words of unseen
    test sentences); the random strings can only be answered by copying the span."""
    documents = [ex["before"] + ex["transcript"] + ex["after"]
                 + (answer_text(ex["answer"]) if ex["task"] != "ser" else "")
                 for ex in examples]
    rng = random.Random(seed)
    vocabulary = sorted({word for ex in examples for word in ex["transcript"].split()})
    asr = next(ex for ex in examples if ex["task"] == "asr")
    for _ in range(len(documents)):
        words = " ".join(rng.choices(vocabulary, k=rng.randint(3, 14)))
        documents.append(asr["before"] + words + asr["after"] + answer_text(words))
    rng.shuffle(documents)
    return documents


def small_llm_config(tokenizer: PreTrainedTokenizerBase, **overrides) -> LlamaConfig:
    """A 4-layer, 256-wide Llama (about 3M parameters besides the embeddings) for `tokenizer`."""
    defaults = dict(vocab_size=len(tokenizer), hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                    num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024,
                    tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                    eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return LlamaConfig(**{**defaults, **overrides})


def train_text_llm(documents: list[str], tokenizer: PreTrainedTokenizerBase, config: LlamaConfig,
                   output_dir: str | Path, steps: int = 1500, batch_size: int = 32, learning_rate: float = 1e-3,
                   seed: int = 0, precision: str = "fp32") -> PreTrainedModel:
    """Train a `LlamaForCausalLM` of `config` from scratch on `documents` (next-token loss, EOS
    appended) with the HF Trainer (`precision` as in `precision_arguments`); saves model + tokenizer
    to `output_dir` and returns the model."""
    eos = tokenizer.eos_token
    data = datasets.Dataset.from_dict({"text": [doc + eos for doc in documents]})
    data = data.map(lambda batch: tokenizer(batch["text"]), batched=True, remove_columns=["text"])
    args = TrainingArguments(
        output_dir=str(output_dir), max_steps=steps, per_device_train_batch_size=batch_size,
        learning_rate=learning_rate, lr_scheduler_type="cosine", warmup_steps=min(100, steps // 10),
        weight_decay=0.01, logging_steps=max(1, steps // 20), save_strategy="no", report_to=[], seed=seed,
        dataloader_num_workers=0, dataloader_pin_memory=False, **precision_arguments(precision),
    )
    torch.manual_seed(seed)  # the initial weights too: the main job trains this LLM in a process of its own
    model = LlamaForCausalLM(config)
    trainer = LossTermsTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer,
                               data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False))
    trainer.train()
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return model


__all__ = ["understanding_examples", "stage3_task_documents", "text_llm_corpus", "small_llm_config", "train_text_llm"]
