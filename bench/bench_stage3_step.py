"""Stage 3's training step per task, with and without AcousticGPT's pass (`acoustic_loss_weight` 1 vs 0).

    python -m bench.bench_stage3_step                 # one thread, process CPU time (robust on a busy machine)
    python -m bench.bench_stage3_step --clock wall --threads 2

Builds the stage-3 model as the recipe does (stage 1's reader + a fresh AcousticGPT, from the main job's folders) and
times forward + backward + AdamW on real single-task batches of the corpus' cached training split (the first
`--batch-size` rows of each task, `stage3_training`, which the performance page uses too), once training
AcousticGPT and once sparing it. Each figure is the best of `--repeats` rounds, the two settings interleaved within a
round. Prints a Markdown table per task with its share of batches under the recipe's task weights, and the expected
seconds per 1,000 steps of that mix.
"""

import argparse

import torch

from bench.common import add_folder_arguments, add_timing_arguments, best_times, timing_clock, training_step
from dualspeechlm.training.multitask import DualSpeechLMCollator, TaskBatchSampler, TaskExamples
from dualspeechlm.training.train_dualspeechlm import DualSpeechLMRecipe, build_model, cached_splits, load_parts


def stage3_training(recipe: DualSpeechLMRecipe, batch_size: int):
    """(model in training mode, its AdamW optimizer (learning rate 1e-6: timed steps barely move it), {task: the
    collated batch of its first `batch_size` cached training rows}, {task: its share of batches under the recipe's
    task weights}), built as stage 3 builds them from the recipe's folders."""
    parts = load_parts(recipe)
    train = TaskExamples(cached_splits(recipe, "train", parts), recipe.tasks)
    torch.manual_seed(recipe.seed)
    model, tokenizer = build_model(recipe, parts[0], parts[2])
    model.train()
    collate = DualSpeechLMCollator(tokenizer, model.config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    sampler = TaskBatchSampler(train.task_of, batch_size, recipe.task_weights, seed=recipe.seed)  # as stage 3 draws
    batches = {task: collate([train[i] for i in sampler.members[task][:batch_size]]) for task in recipe.tasks}
    return model, optimizer, batches, dict(zip(sampler.tasks, sampler.probabilities.tolist()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_folder_arguments(parser, "corpus", "cache-dir", "ustokenizer", "codec", "speaker-encoder")
    parser.add_argument("--batch-size", type=int, default=16)
    add_timing_arguments(parser)
    args = parser.parse_args()
    clock = timing_clock(args)

    recipe = DualSpeechLMRecipe.tiny(corpus=args.corpus, cache_dir=args.cache_dir, ustokenizer=args.ustokenizer,
                                     codec=args.codec, speaker_encoder=args.speaker_encoder,
                                     # caches AcousticGPT's targets, which one setting trains on
                                     acoustic_loss_weight=1.0)
    model, optimizer, batches, shares = stage3_training(recipe, args.batch_size)

    def step(batch: dict, acoustic_loss_weight: float) -> None:
        model.config.acoustic_loss_weight = acoustic_loss_weight
        training_step(model, optimizer, batch)

    print("\n| task | share of batches | s/step, AcousticGPT trained | s/step, spared | ratio |"
          "\n|---|---|---|---|---|")
    mean = {1.0: 0.0, 0.0: 0.0}
    for task, batch in batches.items():
        settings = {weight: (lambda weight=weight: step(batch, weight)) for weight in (1.0, 0.0)}
        best = best_times(settings, args.repeats, clock)
        for weight in mean:
            mean[weight] += shares[task] * best[weight]
        print(f"| {task} | {shares[task]:.1%} | {best[1.0]:.2f} | {best[0.0]:.2f} | {best[1.0] / best[0.0]:.2f}x |")
    print(f"| **mix** | 100% | {mean[1.0]:.2f} | {mean[0.0]:.2f} | {mean[1.0] / mean[0.0]:.2f}x |")
    print(f"\n1,000 steps of this mix: {mean[1.0] * 1000 / 60:.1f} min with AcousticGPT, "
          f"{mean[0.0] * 1000 / 60:.1f} min without ({args.threads} thread(s), batch {args.batch_size}, "
          f"{args.clock} clock)")


if __name__ == "__main__":
    main()
