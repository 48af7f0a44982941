"""Score a stage-1 USTokenizer: the LLM it feeds answers ASR, SER and SQA from its tokens.

On `test` (sentences never in training) and `test_unseen_voice`: codebook use and perplexity, ASR WER / SER and SQA
accuracy of the LLM reading the tokens, the transcript CTC head's ASR WER (the words the tokens keep, read without
the LLM) and Whisper tiny.en's own WER on the same audio; written as evaluation.json + evaluation.md.
`dualspeechlm-train-ustokenizer` ends with it; `dualspeechlm-evaluate-ustokenizer` scores a saved tokenizer folder
again (on another corpus, say) with the LLM trained along with it (`understanding_llm/`, else `text_llm/`, else
`--llm`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import datasets
import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer

from dualspeechlm.feature_extraction_ustokenizer import USTokenizerFeatureExtractor
from dualspeechlm.processing.corpus import corpus_audio

from .metrics import normalize_text, word_error_rate
from .text_llm import TEXT_LLM, UNDERSTANDING_LLM, understanding_examples
from .understanding import UnderstandingCollator, USTokenizerForUnderstanding, understanding_dataset

EVAL_SPLITS = ("test", "test_unseen_voice")


def codebook_usage(codes: np.ndarray, codebook_size: int) -> dict:
    """Share of the codebook used by `codes` (1-D, valid ids only) and the codes' perplexity."""
    counts = np.bincount(codes, minlength=codebook_size)
    probabilities = counts[counts > 0] / counts.sum()
    return {"codes_used": int((counts > 0).sum()), "codebook_size": codebook_size,
            "usage": float((counts > 0).mean()),
            "perplexity": float(np.exp(-(probabilities * np.log(probabilities)).sum()))}


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
            report.update(codebook_usage(np.concatenate([codes[i] for i in picked]),
                                         model.ustokenizer.config.codebook_size))
            if spelling:
                report["asr_ctc_wer"] = word_error_rate([answers[i] for i in picked], [spelled[i] for i in picked])
        if not answering:
            continue
        refs, hyps = [answers[i] for i in picked], [hypotheses[i].strip() for i in picked]
        if task == "asr":
            report["asr_wer"] = word_error_rate(refs, hyps)
        else:
            report[f"{task}_accuracy"] = float(np.mean([normalize_text(r) == normalize_text(h)
                                                        for r, h in zip(refs, hyps)]))
    if answering:
        report["samples"] = [{"task": tasks[i], "reference": answers[i], "hypothesis": hypotheses[i].strip()}
                             for i in range(0, len(tasks), max(1, len(tasks) // 12))]
    return report


def whisper_wer(corpus: str, whisper: str, split: str, limit: int | None) -> float:
    """Whisper tiny.en's own WER on the same `speech` audio (greedy, the foundation's judge)."""
    from .judge import WhisperJudge

    rows = corpus_audio(corpus, split, limit=limit)
    hypotheses = WhisperJudge(whisper).transcribe(rows["audio"], 16000)
    return word_error_rate(rows["text"], hypotheses)


def markdown_report(results: dict) -> str:
    """One row per split; '-' where a score was not measured (no Whisper baseline, no understanding loss, no
    transcript CTC)."""
    lines = ["| split | ASR WER (tokens -> LLM) | ASR WER (tokens -> CTC head) | Whisper tiny.en WER | SER accuracy "
             "| SQA accuracy | codes used | perplexity |", "|---|---|---|---|---|---|---|---|"]
    for split, r in results["splits"].items():
        rates = [f"{r[key]:.1%}" if key in r else "-"
                 for key in ("asr_wer", "asr_ctc_wer", "whisper_wer", "ser_accuracy", "sqa_accuracy")]
        lines.append(f"| {split} | {' | '.join(rates)} | {r['codes_used']} / {r['codebook_size']} "
                     f"| {r['perplexity']:.0f} |")
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


def evaluate_ustokenizer(model: USTokenizerForUnderstanding, text_tokenizer, feature_extractor, corpus: str,
                         cache_dir: str, whisper: str, output_dir: str | Path, limit: int | None = None,
                         whisper_baseline: bool = True, header: dict | None = None) -> dict:
    """Score `model` on both test splits of `corpus` (the first `limit` examples per task, all when None) and write
    evaluation.json (`header`'s entries first) + evaluation.md to `output_dir`; returns the results."""
    results = {**(header or {}), "splits": {}}
    for split in EVAL_SPLITS:
        examples = limit_rows(understanding_examples(corpus, split), limit)
        data = understanding_dataset(corpus, cache_dir, split, examples, text_tokenizer, model.ustokenizer.encoder,
                                     feature_extractor)
        results["splits"][split] = evaluate_split(model, data, text_tokenizer)
        if whisper_baseline:
            results["splits"][split]["whisper_wer"] = whisper_wer(corpus, whisper, split, limit)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "evaluation.json").write_text(json.dumps(results, indent=2))
    (output_dir / "evaluation.md").write_text(markdown_report(results))
    print(markdown_report(results))
    return results


def reading_llm_folder(folder: Path) -> Path:
    """The LLM that reads the tokens of the tokenizer in `folder`: the one trained along with it, else the frozen
    small one trained before stage 1."""
    for name in (UNDERSTANDING_LLM, TEXT_LLM):
        if (folder / name / "config.json").is_file():
            return folder / name
    raise FileNotFoundError(f"{folder} holds neither {UNDERSTANDING_LLM}/ nor {TEXT_LLM}/: name the LLM the tokenizer "
                            "was trained through with --llm")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="models/ustokenizer",
                        help="a folder written by dualspeechlm-train-ustokenizer")
    parser.add_argument("--llm", default=None,
                        help=f"the LLM reading the tokens (default: the folder's {UNDERSTANDING_LLM}/, "
                             f"else {TEXT_LLM}/)")
    parser.add_argument("--corpus", default="data/corpus")
    parser.add_argument("--cache-dir", default="data/encoder_cache")
    parser.add_argument("--whisper", default="models/whisper-tiny.en")
    parser.add_argument("--limit", type=int, default=None, help="examples per task and split (default: all)")
    parser.add_argument("--no-whisper-baseline", dest="whisper_baseline", action="store_false")
    parser.add_argument("--output-dir", default=None,
                        help="where evaluation.json / .md go (default: the model folder)")
    args = parser.parse_args(argv)
    folder = Path(args.model)
    llm_source = args.llm or reading_llm_folder(folder)
    model = USTokenizerForUnderstanding.from_pretrained(folder, AutoModelForCausalLM.from_pretrained(llm_source))
    evaluate_ustokenizer(model, AutoTokenizer.from_pretrained(llm_source),
                         USTokenizerFeatureExtractor.from_pretrained(folder), args.corpus, args.cache_dir,
                         args.whisper, args.output_dir or folder, args.limit, args.whisper_baseline,
                         header={"model": str(folder), "llm": str(llm_source), "corpus": args.corpus})


if __name__ == "__main__":
    main()
