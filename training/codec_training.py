"""What both codec trainers (`train_codec`, `train_codec_decoder`) share: the corpus audio, the learning-rate
schedule and update step, and the run flags."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch


def corpus_waveforms(corpus_dir: str | Path, split: str,
                     limit: int | None = None) -> tuple[list[torch.Tensor], list[str], list[str]]:
    """Audio `[samples]` tensors, texts and speakers of the corpus' `speech` config split."""
    from dualspeechlm.processing.corpus import corpus_audio

    rows = corpus_audio(corpus_dir, split, limit=limit)
    return [torch.from_numpy(audio) for audio in rows["audio"]], rows["text"], rows["speaker"]


def cosine_lr(optimizer, step: int, steps: int, peak: float) -> None:
    """Linear warm-up over the first 10% of steps (at most 100), then cosine decay to zero."""
    warmup = max(1, min(100, steps // 10))
    lr = peak * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / steps))
    for group in optimizer.param_groups:
        group["lr"] = lr


def optimizer_step(optimizer, loss: torch.Tensor, parameters, step: int, steps: int, peak_lr: float) -> float:
    """One update at the schedule's learning rate (`cosine_lr`), gradients clipped to norm 1; returns the loss."""
    cosine_lr(optimizer, step, steps, peak_lr)
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(parameters, 1.0)
    optimizer.step()
    return loss.item()


def add_run_arguments(parser: argparse.ArgumentParser, lr: float, eval_limit: int) -> None:
    """The flags both codec trainers take: batch size, peak learning rate, data limits and the seed."""
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=lr)
    parser.add_argument("--train-limit", type=int, default=None, help="use only the first N training utterances")
    parser.add_argument("--eval-limit", type=int, default=eval_limit, help="utterances judged per test split")
    parser.add_argument("--seed", type=int, default=0)


__all__ = ["add_run_arguments", "corpus_waveforms", "optimizer_step"]
