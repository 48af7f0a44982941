"""The performance page's training section: stage 1's and stage 3's training steps on real batches, their FLOPs and
the FLOP rate they reach against the same run's matrix-product peak of this machine."""

import random
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from bench.bench_stage3_step import stage3_training
from bench.common import best_times, counted_flops, significant, training_step
from dualspeechlm.feature_extraction_ustokenizer import USTokenizerFeatureExtractor
from dualspeechlm.training.text_llm import TEXT_LLM, understanding_examples
from dualspeechlm.training.train_dualspeechlm import DualSpeechLMRecipe
from dualspeechlm.training.train_ustokenizer import USTokenizerRecipe
from dualspeechlm.training.understanding import (
    UnderstandingCollator,
    USTokenizerForUnderstanding,
    understanding_dataset,
)

MATMUL_SIZE = 2048  # the side of the square matrices whose product measures the peak FLOP rate


def stage1_training(recipe: USTokenizerRecipe):
    """(model in training mode, its AdamW optimizer over the trained parameters (learning rate 1e-6: timed steps
    barely move it), one collated batch of `recipe.batch_size` training examples drawn at random, seeded) built as
    stage 1 builds them: the tokenizer saved in `recipe.output_dir` feeding the text LLM it started from
    (`text_llm/`), trained along or frozen as the recipe says, on the cached encoder outputs of `recipe.cache_dir`.
    Stage 1 itself draws batches of like length, with a little less padding."""
    folder = Path(recipe.output_dir)
    llm = AutoModelForCausalLM.from_pretrained(folder / TEXT_LLM)
    text_tokenizer = AutoTokenizer.from_pretrained(folder / TEXT_LLM)
    model = USTokenizerForUnderstanding.from_pretrained(folder, llm, freeze_llm=recipe.freeze_llm)
    examples = understanding_examples(recipe.corpus, "train")
    rows = understanding_dataset(recipe.corpus, recipe.cache_dir, "train", examples, text_tokenizer,
                                 model.ustokenizer.encoder, USTokenizerFeatureExtractor.from_pretrained(folder),
                                 getattr(model, "alphabet", None))
    picked = random.Random(recipe.seed).sample(range(len(rows)), min(recipe.batch_size, len(rows)))
    batch = UnderstandingCollator(text_tokenizer.pad_token_id)([rows[i] for i in picked])
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)
    return model, optimizer, batch


def training_speeds(steps: dict[str, Callable[[], None]], mixes: dict[str, dict[str, float]], repeats: int, clock,
                    matmul_size: int = MATMUL_SIZE) -> dict:
    """Seconds and FLOPs of training steps, beside the matrix-product peak of this machine, all timed interleaved
    in the same rounds (`best_times`, best of `repeats`).

    steps: {name: one training step}; mixes: {name: {step name: share}}, rows averaged over steps by their shares
    (e.g. stage 3's batches, one task each). The peak is the FLOP rate of a `matmul_size` square product in fp32
    and in bf16. Returns `matmul_size`, `matmul_peak_flops_per_second` ({"fp32", "bf16"}) and `steps`: per step
    (then per mix) `seconds_per_step`, `steps_per_second`, `flops_per_step` (`counted_flops`: forward and backward),
    `flops_per_second` and its share of each peak (`share_of_fp32_peak`, `share_of_bf16_peak`).
    """
    flops = {name: counted_flops(step) for name, step in steps.items()}  # also the warm-up of each step
    generator = torch.Generator().manual_seed(0)
    fp32 = [torch.randn(matmul_size, matmul_size, generator=generator) for _ in range(2)]
    bf16 = [matrix.bfloat16() for matrix in fp32]
    products = {"matmul_fp32": lambda: fp32[0] @ fp32[1], "matmul_bf16": lambda: bf16[0] @ bf16[1]}
    for product in products.values():  # warm-up
        product()
    best = best_times({**steps, **products}, repeats, clock)
    peak = {dtype: 2 * matmul_size**3 / best[f"matmul_{dtype}"] for dtype in ("fp32", "bf16")}
    measured = {name: (best[name], flops[name]) for name in steps}
    for name, shares in mixes.items():
        measured[name] = (sum(share * best[step] for step, share in shares.items()),
                          sum(share * flops[step] for step, share in shares.items()))
    rows = {}
    for name, (seconds, step_flops) in measured.items():
        rate = step_flops / seconds
        rows[name] = {"seconds_per_step": seconds, "steps_per_second": 1 / seconds, "flops_per_step": step_flops,
                      "flops_per_second": rate, "share_of_fp32_peak": rate / peak["fp32"],
                      "share_of_bf16_peak": rate / peak["bf16"]}
    return {"matmul_size": matmul_size, "matmul_peak_flops_per_second": peak, "steps": rows}


def training_section(corpus: str, cache_dir: str, ustokenizer: str, codec: str, speaker_encoder: str, repeats: int,
                     clock) -> dict:
    """`training_speeds` of stage 1 (`stage1_training`) and of stage 3 per task (`stage3_training`, its first
    training rows of each task) with the tiny presets' recipes on the given folders, and stage 3's task mix under
    the preset's task weights."""
    stage1 = USTokenizerRecipe.tiny(corpus=corpus, cache_dir=cache_dir, output_dir=ustokenizer)
    stage3 = DualSpeechLMRecipe.tiny(corpus=corpus, cache_dir=cache_dir, ustokenizer=ustokenizer, codec=codec,
                                     speaker_encoder=speaker_encoder)
    model1, optimizer1, batch1 = stage1_training(stage1)
    model3, optimizer3, batches3, shares = stage3_training(stage3, stage3.batch_size)
    steps = {f"stage 1, batch {len(batch1['encoder_lengths'])}": lambda: training_step(model1, optimizer1, batch1)}
    names = {task: f"stage 3 {task}, batch {len(batch['input_ids'])}" for task, batch in batches3.items()}
    for task, batch in batches3.items():
        steps[names[task]] = lambda batch=batch: training_step(model3, optimizer3, batch)
    mix = {names[task]: share for task, share in shares.items()}
    return training_speeds(steps, {"stage 3, the preset's task mix": mix}, repeats, clock, MATMUL_SIZE)


def training_table(speeds: dict) -> str:
    """Markdown of a `training_speeds` result: one row per step (then per mix), its FLOP rate beside the peaks."""
    lines = ["| training step | seconds per step | steps per second | GFLOP per step | GFLOP/s | of the fp32 peak | "
             "of the bf16 peak |", "|---|---|---|---|---|---|---|"]
    for name, step in speeds["steps"].items():
        lines.append(f"| {name} | {significant(step['seconds_per_step'])} | {significant(step['steps_per_second'])} | "
                     f"{significant(step['flops_per_step'] / 1e9)} | {significant(step['flops_per_second'] / 1e9)} | "
                     f"{step['share_of_fp32_peak']:.1%} | {step['share_of_bf16_peak']:.1%} |")
    return "\n".join(lines)
