"""Stage 1: train the USTokenizer through a frozen text LLM on ASR, SER and SQA, then evaluate it.

    1. text LLM: a pretrained causal LM (`--llm`), or, offline, a byte-level BPE + a small Llama
       trained on the corpus' training text (training/text_llm.py), then frozen;
    2. the frozen Whisper encoder's outputs, cached once per corpus split (training/encoder_cache.py);
    3. the tokenizer's small parts trained with the HF Trainer on the cached features, loss =
       1 * commitment + 45 * reconstruction + 5 * understanding (training/understanding.py), and in the
       tiny preset + 5 * the transcript CTC (the small LLM alone does not teach the tokens the words);
       with `quantizer_warmup_steps` the first steps run unquantized, then the codebook is fit by k-means
       to the latents those losses have shaped (FitCodebookCallback);
    4. evaluation on `test` (sentences never in training) and `test_unseen_voice`: codebook use and
       perplexity, ASR WER / SER and SQA accuracy of the LLM reading the tokens, and Whisper
       tiny.en's own WER on the same audio; written as evaluation.json + evaluation.md + loss.png.

The output folder holds the tokenizer (`USTokenizerModel` + its feature extractor, loadable with
`AutoModel` / `AutoFeatureExtractor`, `trust_remote_code=True` included), `text_llm/` and, when the LLM
trained along (`freeze_llm=False`), `understanding_llm/`: that LLM after stage 1, which reads the tokens.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments

from dualspeechlm.configuration_ustokenizer import USTokenizerConfig
from dualspeechlm.feature_extraction_ustokenizer import USTokenizerFeatureExtractor
from dualspeechlm.modeling_ustokenizer import USTokenizerModel
from dualspeechlm.processing.corpus import corpus_audio
from dualspeechlm.tasks import answer_text
from dualspeechlm.processing.text_tokenizer import train_text_tokenizer

from .encoder_cache import cached_encoder_outputs
from .metrics import normalize_text, word_error_rate
from .plots import plot_losses
from .recipe_cli import PresetRecipe, recipe_from_args, recipe_parser
from .text_llm import (small_llm_config, stage3_task_documents, text_llm_corpus, train_text_llm,
                       understanding_examples)
from .trainer import IdleCoresCallback, LossTermsTrainer, precision_arguments
from .understanding import FitCodebookCallback, UnderstandingCollator, USTokenizerForUnderstanding, character_ids

EVAL_SPLITS = ("test", "test_unseen_voice")
UNDERSTANDING_LLM = "understanding_llm"  # subfolder: the LLM trained along with the tokenizer


@dataclass
class USTokenizerRecipe(PresetRecipe):
    """Every setting of stage 1; `tiny()` runs on 2 CPU cores, `paper()` is the paper's setup."""

    corpus: str = "data/corpus"
    whisper: str = "models/whisper-tiny.en"
    output_dir: str = "models/ustokenizer"
    cache_dir: str = "data/encoder_cache"
    llm: str | None = None  # a pretrained causal LM (folder or Hub id); None: train a small one here
    text_vocab_size: int = 1024
    llm_config: dict = field(default_factory=dict)  # overrides of small_llm_config
    llm_steps: int = 600
    llm_batch_size: int = 32
    llm_learning_rate: float = 1e-3
    tokenizer_config: dict = field(default_factory=dict)  # USTokenizerConfig fields
    tokenizer_preset: str = "tiny"
    freeze_llm: bool = True
    steps: int = 1000
    batch_size: int = 16
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    max_grad_norm: float = 1.0  # gradient clipping (0: none), as in TrainingArguments
    quantizer_warmup_steps: int = 0  # > 0: train unquantized this long, then fit the codebook by k-means
    logging_steps: int = 50
    eval_limit: int | None = None  # utterances per evaluated split (None: all)
    whisper_baseline: bool = True
    seed: int = 0
    use_idle_cores: bool = False  # raise the threads to the cores other processes leave idle (the main job does)
    precision: str = "fp32"  # "fp32" | "bf16" | "auto" (the paper preset): see trainer.precision_arguments

    preset_stem = "ustokenizer"  # presets/ustokenizer_<name>.yaml


def text_llm(recipe: USTokenizerRecipe, train_examples: list[dict]):
    """(LLM, text tokenizer): the pretrained one, the one trained by an earlier run, or a new one."""
    folder = Path(recipe.output_dir) / "text_llm"
    source = recipe.llm or (str(folder) if (folder / "config.json").is_file() else None)
    if source is not None:
        return AutoModelForCausalLM.from_pretrained(source), AutoTokenizer.from_pretrained(source)
    documents = text_llm_corpus(train_examples, seed=recipe.seed) + stage3_task_documents(recipe.corpus)
    tokenizer = train_text_tokenizer(documents, recipe.text_vocab_size)
    config = small_llm_config(tokenizer, **recipe.llm_config)
    model = train_text_llm(documents, tokenizer, config, folder, steps=recipe.llm_steps,
                           batch_size=recipe.llm_batch_size, learning_rate=recipe.llm_learning_rate, seed=recipe.seed,
                           precision=recipe.precision)
    return model, tokenizer


def understanding_dataset(recipe: USTokenizerRecipe, split: str, examples: list[dict], text_tokenizer, encoder,
                          feature_extractor, alphabet: str | None = None) -> datasets.Dataset:
    """Cached encoder outputs of every understanding example of `split` + its tokenized prompt parts (and, given
    an `alphabet`, the `character_ids` of its transcript for the transcript CTC)."""
    parts = []
    for config in ("speech", "style", "qa"):
        rows = [ex for ex in examples if ex["config"] == config]
        cache = cached_encoder_outputs(recipe.corpus, config, split, encoder, feature_extractor, recipe.cache_dir)
        cache = cache.select([ex["index"] for ex in rows]).select_columns(["encoder_hidden_states", "num_frames"])

        def ids(texts):
            return text_tokenizer(texts, add_special_tokens=False).input_ids

        eos = text_tokenizer.eos_token
        columns = {
            "task": [ex["task"] for ex in rows],
            "before_ids": [[text_tokenizer.bos_token_id] + i for i in ids([ex["before"] for ex in rows])],
            "after_ids": ids([ex["after"] for ex in rows]),
            "answer_ids": ids([answer_text(ex["answer"]) + eos for ex in rows]),
            "answer": [ex["answer"] for ex in rows],
        }
        if alphabet:
            columns["transcript_ids"] = [character_ids(ex["transcript"], alphabet) for ex in rows]
        for name, values in columns.items():
            cache = cache.add_column(name, values)
        parts.append(cache)
    return datasets.concatenate_datasets(parts).with_format("numpy")


def codebook_usage(codes: np.ndarray, codebook_size: int) -> dict:
    """Share of the codebook used by `codes` (1-D, valid ids only) and the codes' perplexity."""
    counts = np.bincount(codes, minlength=codebook_size)
    probabilities = counts[counts > 0] / counts.sum()
    return {"codes_used": int((counts > 0).sum()), "codebook_size": codebook_size,
            "usage": float((counts > 0).mean()), "perplexity": float(np.exp(-(probabilities * np.log(probabilities)).sum()))}


@torch.no_grad()
def evaluate_split(model: USTokenizerForUnderstanding, dataset: datasets.Dataset, text_tokenizer,
                   batch_size: int = 16) -> dict:
    """Greedy answers for every row, scored per task (ASR: WER; SER, SQA: exact-match accuracy), and
    the codebook use of the ASR rows. Returns also the hypotheses for inspection. A tokenizer trained without
    the understanding loss (`understanding_weight` 0) has an untrained adapter: only its codebook use is scored.
    With the transcript CTC on, the ASR rows are also spelled by its head (`asr_ctc_wer`): the words the tokens
    keep, read without the LLM."""
    model.eval()
    answering = model.ustokenizer.config.understanding_weight > 0
    spelling = model.ustokenizer.config.transcript_ctc_weight > 0
    collate = UnderstandingCollator(text_tokenizer.pad_token_id)
    hypotheses, spelled, codes = [], [], []
    for start in tqdm(range(0, len(dataset), batch_size), desc="evaluate", unit="batch"):
        rows = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        batch = collate([{k: v for k, v in row.items() if k not in ("answer_ids", "transcript_ids")} for row in rows])
        if answering:
            hypotheses += text_tokenizer.batch_decode(model.answer(**batch), skip_special_tokens=True)
        if spelling:
            spelled += model.spell(**batch)
        encoded = model.ustokenizer.encode_cached(batch["encoder_hidden_states"], batch["encoder_lengths"])
        codes += [ids[:n].numpy() for ids, n in zip(encoded.ids, encoded.lengths)]
    tasks, answers = dataset["task"], list(dataset["answer"])
    report = {}
    for task in sorted(set(tasks)):
        picked = [i for i, t in enumerate(tasks) if t == task]
        report[f"{task}_examples"] = len(picked)
        if task == "asr":
            report.update(codebook_usage(np.concatenate([codes[i] for i in picked]), model.ustokenizer.config.codebook_size))
            if spelling:
                report["asr_ctc_wer"] = word_error_rate([answers[i] for i in picked], [spelled[i] for i in picked])
        if not answering:
            continue
        refs, hyps = [answers[i] for i in picked], [hypotheses[i].strip() for i in picked]
        if task == "asr":
            report["asr_wer"] = word_error_rate(refs, hyps)
        else:
            report[f"{task}_accuracy"] = float(np.mean([normalize_text(r) == normalize_text(h) for r, h in zip(refs, hyps)]))
    if answering:
        report["samples"] = [{"task": tasks[i], "reference": answers[i], "hypothesis": hypotheses[i].strip()}
                             for i in range(0, len(tasks), max(1, len(tasks) // 12))]
    return report


def whisper_wer(recipe: USTokenizerRecipe, split: str, limit: int | None) -> float:
    """Whisper tiny.en's own WER on the same `speech` audio (greedy, the foundation's judge)."""
    from .judge import WhisperJudge

    rows = corpus_audio(recipe.corpus, split, limit=limit)
    hypotheses = WhisperJudge(recipe.whisper).transcribe(rows["audio"], 16000)
    return word_error_rate(rows["text"], hypotheses)


def markdown_report(results: dict) -> str:
    """One row per split; '-' where a score was not measured (no Whisper baseline, no understanding loss, no
    transcript CTC)."""
    lines = ["| split | ASR WER (tokens -> LLM) | ASR WER (tokens -> CTC head) | Whisper tiny.en WER | SER accuracy "
             "| SQA accuracy | codes used | perplexity |", "|---|---|---|---|---|---|---|---|"]
    for split, r in results["splits"].items():
        rates = [f"{r[key]:.1%}" if key in r else "-"
                 for key in ("asr_wer", "asr_ctc_wer", "whisper_wer", "ser_accuracy", "sqa_accuracy")]
        lines.append(f"| {split} | {' | '.join(rates)} | {r['codes_used']} / {r['codebook_size']} | {r['perplexity']:.0f} |")
    return "\n".join(lines) + "\n"


def limit_rows(examples: list[dict], limit: int | None) -> list[dict]:
    """The first `limit` examples of each task (all when None)."""
    if limit is None:
        return examples
    seen: dict[str, int] = {}
    kept = []
    for ex in examples:
        seen[ex["task"]] = seen.get(ex["task"], 0) + 1
        if seen[ex["task"]] <= limit:
            kept.append(ex)
    return kept


def train_ustokenizer(recipe: USTokenizerRecipe) -> dict:
    """Run stage 1 end to end (see the module docstring); returns the evaluation results."""
    torch.manual_seed(recipe.seed)
    output_dir = Path(recipe.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    train_examples = understanding_examples(recipe.corpus, "train")
    llm, text_tokenizer = text_llm(recipe, train_examples)

    preset = USTokenizerConfig.tiny if recipe.tokenizer_preset == "tiny" else USTokenizerConfig.paper
    config = preset(**{"llm_hidden_size": llm.config.hidden_size, **recipe.tokenizer_config})
    ustokenizer = USTokenizerModel.from_whisper(recipe.whisper, config)
    feature_extractor = USTokenizerFeatureExtractor()
    alphabet = ("".join(sorted(set("".join(ex["transcript"] for ex in train_examples))))
                if config.transcript_ctc_weight > 0 else None)
    model = USTokenizerForUnderstanding(ustokenizer, llm, freeze_llm=recipe.freeze_llm, alphabet=alphabet)

    train_data = understanding_dataset(recipe, "train", train_examples, text_tokenizer, ustokenizer.encoder,
                                       feature_extractor, alphabet)
    args = TrainingArguments(
        output_dir=str(output_dir / "checkpoints"), max_steps=recipe.steps,
        per_device_train_batch_size=recipe.batch_size, learning_rate=recipe.learning_rate,
        lr_scheduler_type="cosine", warmup_steps=recipe.warmup_steps, weight_decay=0.0,
        logging_steps=recipe.logging_steps, save_strategy="no", report_to=[], seed=recipe.seed,
        remove_unused_columns=False, dataloader_num_workers=0, dataloader_pin_memory=False, label_names=[],
        train_sampling_strategy="group_by_length", length_column_name="num_frames",  # little padding
        max_grad_norm=recipe.max_grad_norm, **precision_arguments(recipe.precision),
    )
    collator = UnderstandingCollator(text_tokenizer.pad_token_id)
    callbacks = ([FitCodebookCallback(model, train_data, collator, recipe.quantizer_warmup_steps, seed=recipe.seed)]
                 if recipe.quantizer_warmup_steps > 0 else [])
    callbacks += [IdleCoresCallback()] if recipe.use_idle_cores else []
    trainer = LossTermsTrainer(model=model, args=args, train_dataset=train_data, data_collator=collator,
                               callbacks=callbacks)
    trainer.train()
    ustokenizer.save_pretrained(output_dir)
    feature_extractor.save_pretrained(output_dir)
    if not recipe.freeze_llm:  # the LLM that learned to read the tokens: stage 3 can start from it
        llm.save_pretrained(output_dir / UNDERSTANDING_LLM)
        text_tokenizer.save_pretrained(output_dir / UNDERSTANDING_LLM)
    plot_losses(trainer.state.log_history, output_dir / "loss.png",
                ("loss", "commitment_loss", "reconstruction_loss", "understanding_loss", "transcript_ctc_loss"))

    results = {"recipe": dataclasses.asdict(recipe), "train_examples": len(train_data), "splits": {}}
    for split in EVAL_SPLITS:
        examples = limit_rows(understanding_examples(recipe.corpus, split), recipe.eval_limit)
        data = understanding_dataset(recipe, split, examples, text_tokenizer, ustokenizer.encoder, feature_extractor)
        results["splits"][split] = evaluate_split(model, data, text_tokenizer)
        if recipe.whisper_baseline:
            results["splits"][split]["whisper_wer"] = whisper_wer(recipe, split, recipe.eval_limit)
    (output_dir / "evaluation.json").write_text(json.dumps(results, indent=2))
    (output_dir / "evaluation.md").write_text(markdown_report(results))
    print(markdown_report(results))
    return results


def main(argv=None) -> None:
    parser = recipe_parser(USTokenizerRecipe, __doc__.split("\n\n")[0])
    parser.add_argument("--freeze-llm", dest="freeze_llm", action="store_true", default=None,
                        help="keep the LLM frozen (the paper's setting, the paper preset's default)")
    parser.add_argument("--no-freeze-llm", dest="freeze_llm", action="store_false", default=None,
                        help="train the LLM along with the tokenizer (the tiny preset's default)")
    parser.add_argument("--no-whisper-baseline", dest="whisper_baseline", action="store_false", default=None)
    train_ustokenizer(recipe_from_args(USTokenizerRecipe, vars(parser.parse_args(argv))))


if __name__ == "__main__":
    main()
