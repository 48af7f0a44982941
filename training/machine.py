"""The machine a measurement ran on, in words, for the pages that report measurements."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import torch


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def describe_machine() -> str:
    """E.g. "2 cores of AMD EPYC 7B13, no GPU, torch 2.14.1": the cores this process may use, the CPU, the GPU."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{usable_cores()} cores of {cpu_name()}, {gpu}, torch {torch.__version__}"


def current_commit() -> str | None:
    """The short hash of the checked-out commit of this code, when it runs from a git checkout."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


__all__ = ["cpu_name", "current_commit", "describe_machine", "usable_cores"]
