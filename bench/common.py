"""The bench helpers the benchmarks share: timing flags, the clock they pick, and interleaved best-of-N timing.

Scripts import from here and from the installed `dualspeechlm`, never from each other.
"""

import argparse
import time

import torch


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


def best_times(functions: dict, repeats: int, clock) -> dict:
    """Best time of each function over `repeats` rounds, the functions interleaved within a round
    (so a change in machine load hits all of them alike)."""
    best = dict.fromkeys(functions, float("inf"))
    for _ in range(repeats):
        for name, function in functions.items():
            began = clock()
            function()
            best[name] = min(best[name], clock() - began)
    return best
