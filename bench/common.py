"""The bench helpers the benchmarks share: folder and timing flags, the clock they pick, interleaved best-of-N
timing, one training step with its FLOP count, and the number format of their tables.

The `bench_*.py` scripts import from here and from the installed `dualspeechlm`, never from each other; the
performance page (`bench/performance.py`) gathers their measurement functions.
"""

import argparse
import math
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

# The main job's folders (`make quickstart`), the defaults of the benchmarks' folder flags
MAIN_JOB_FOLDERS = {"model": "models/dualspeechlm", "corpus": "data/corpus", "cache-dir": "data/encoder_cache",
                    "whisper": "models/whisper-tiny.en", "ustokenizer": "models/ustokenizer",
                    "codec": "models/mel-codec", "speaker-encoder": "models/speaker-encoder"}


def add_folder_arguments(parser: argparse.ArgumentParser, *names: str) -> None:
    """`--<name>` for each of `names` (keys of `MAIN_JOB_FOLDERS`), defaulting to the main job's folder."""
    for name in names:
        parser.add_argument(f"--{name}", default=MAIN_JOB_FOLDERS[name])


def add_timing_arguments(parser: argparse.ArgumentParser, repeats: int = 3, threads: int = 1,
                         clock: str = "cpu") -> None:
    """`--repeats`, `--threads` and `--clock`, with the calling bench's defaults."""
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--threads", type=int, default=threads)
    parser.add_argument("--clock", choices=["wall", "cpu"], default=clock,
                        help="cpu: process CPU time, robust to a busy machine (use it with --threads 1)")


def timing_clock(args: argparse.Namespace):
    """Set torch's threads to `args.threads`; return the clock `args.clock` names."""
    torch.set_num_threads(args.threads)
    return time.perf_counter if args.clock == "wall" else time.process_time


def best_times(functions: dict, repeats: int, clock, outputs: dict | None = None) -> dict:
    """Best time (seconds) of each function over `repeats` rounds, the functions interleaved within a round
    (so a change in machine load hits all of them alike). `outputs`, when given, receives each function's return
    value of the last round, under the same key."""
    best = dict.fromkeys(functions, float("inf"))
    for _ in range(repeats):
        for name, function in functions.items():
            began = clock()
            returned = function()
            best[name] = min(best[name], clock() - began)
            if outputs is not None:
                outputs[name] = returned
    return best


def training_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: dict) -> None:
    """One update as the trainers make it: forward on the collated `batch` (the model's keyword arguments), backward
    of `.loss`, the optimizer's step."""
    model(**batch).loss.backward()
    optimizer.step()
    optimizer.zero_grad()


def counted_flops(function) -> int:
    """Floating-point operations of one call of `function()`, as `torch.utils.flop_counter` counts them: matrix
    products, convolutions and attention, forward and backward (2 per multiply-add); element-wise work is free."""
    with FlopCounterMode(display=False) as counter:
        function()
    return counter.get_total_flops()


def significant(value: float, digits: int = 3) -> str:
    """`value` to `digits` significant digits in plain notation, for tables: 123000, 1020, 13.3, 0.00702."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    rounded = float(f"{value:.{digits}g}")
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(rounded))))
    return f"{rounded:.{decimals}f}"
