"""The Trainer hooks the recipes need: log each loss term the model returns beside the total, draw
training batches from a batch sampler (stage 3's single-task batches), train on the cores other
processes leave idle, and in bfloat16 where asked."""

from __future__ import annotations

import os
import time
from collections import defaultdict

import psutil
import torch
from accelerate.utils import gather_object
from torch.utils.data import DataLoader, Sampler
from transformers import Trainer, TrainerCallback


class LossTermsTrainer(Trainer):
    """A `Trainer` that also logs every `*_loss` field of the model output (e.g. the USTokenizer's
    commitment / reconstruction / understanding terms), averaged over the steps since the last log
    and over the processes."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._loss_terms = defaultdict(list)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs)
        if model.training:
            for name, value in outputs.items():
                if name.endswith("_loss") and value is not None:
                    self._loss_terms[name].append(value.detach().float().item())
        return (outputs["loss"], outputs) if return_outputs else outputs["loss"]

    def log(self, logs: dict, *args, **kwargs) -> None:
        # Every process logs (the Trainer gathers `loss` there), so terms are gathered too: each term
        # is the mean over the processes that saw it (with single-task batches, one process may have
        # no acoustic term in a window where another has).
        if "loss" in logs:
            local = {name: sum(values) / len(values) for name, values in self._loss_terms.items()}
            gathered = gather_object([local]) if self.accelerator.num_processes > 1 else [local]
            for name in sorted({name for terms in gathered for name in terms}):
                values = [terms[name] for terms in gathered if name in terms]
                logs[name] = round(sum(values) / len(values), 6)
            self._loss_terms.clear()
        super().log(logs, *args, **kwargs)

    def leave_process_group(self) -> None:
        """Destroy the process group (nothing to do in one process) once training is over: a process that exits
        with gloo's worker threads still running can abort ("terminate called without an active exception"). No
        barrier first: accelerate's asks for a GPU per process, which two CPU processes on a one-GPU machine do not
        have."""
        self.accelerator.end_training()


class BatchSamplerTrainer(LossTermsTrainer):
    """A `LossTermsTrainer` whose training batches come from `batch_sampler` (index lists), e.g. a
    `TaskBatchSampler`. Under accelerate each process takes every n-th batch of it."""

    def __init__(self, *args, batch_sampler: Sampler[list[int]], **kwargs):
        super().__init__(*args, **kwargs)
        self.batch_sampler = batch_sampler

    def get_train_dataloader(self) -> DataLoader:
        loader = DataLoader(self.train_dataset, batch_sampler=self.batch_sampler, collate_fn=self.data_collator,
                            num_workers=self.args.dataloader_num_workers, pin_memory=self.args.dataloader_pin_memory)
        return self.accelerator.prepare(loader)


def cpu_seconds() -> tuple[float, float, float]:
    """(wall clock, CPU seconds the whole machine has been busy, CPU seconds of this process), all in seconds."""
    machine = psutil.cpu_times()
    idle = machine.idle + getattr(machine, "iowait", 0.0)
    guest = getattr(machine, "guest", 0.0) + getattr(machine, "guest_nice", 0.0)  # already counted in user time
    own = psutil.Process().cpu_times()
    return time.perf_counter(), sum(machine) - idle - guest, own.user + own.system


class IdleCoresCallback(TrainerCallback):
    """Every `every` steps, sets torch's intra-op threads to the cores that the other processes left idle over those
    steps (the machine's busy CPU time less this process', per second; a core counts as idle when at least three
    quarters of it were), at least 1. The main job runs its stages side by side at one thread each; a stage left
    alone (stage 1 once the codec is trained, stage 3 once the decoder is) then takes every idle core. Two threads
    beside a busy process are slower than one, so the threads follow what the others use rather than a fixed count.
    Opt-in (`--use-idle-cores`): the Makefile's main job turns it on. `usage`: a stand-in for `cpu_seconds`."""

    def __init__(self, every: int = 25, cores: int | None = None, usage=cpu_seconds):
        self.every, self.usage, self.last = every, usage, None
        self.cores = cores or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                               else os.cpu_count() or 1)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every:
            return
        now = self.usage()
        if self.last is not None and now[0] > self.last[0]:
            wall, busy, own = (a - b for a, b in zip(now, self.last))
            others = max(0.0, (busy - own) / wall)  # cores the other processes kept busy
            wanted = max(1, min(self.cores, int(self.cores - others + 0.25)))
            if wanted != torch.get_num_threads():
                torch.set_num_threads(wanted)
                print(f"step {state.global_step}: {wanted} thread(s) (other processes used {others:.1f} of "
                      f"{self.cores} cores)")
        self.last = now


PRECISIONS = ("auto", "bf16", "fp32")


def cuda_bf16() -> bool:
    """Whether training runs on a CUDA GPU with native bfloat16 (Ampere and later)."""
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def precision_arguments(precision: str) -> dict:
    """The `TrainingArguments` fields for a recipe's `precision`: "fp32", "bf16" (bfloat16 autocast, on the CPU
    too), or "auto": bf16 on a GPU that has it (`cuda_bf16`), else fp32. The weights and the optimizer stay fp32
    either way. On CPUs with AVX512-BF16, bf16 made a stage-1 step faster but slowed its learning
    (docs/experiments/2026-11-27-bf16-gradient-clipping.md), so the tiny presets train in fp32 and the paper presets
    ask for "auto"."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    bf16 = precision == "bf16" or (precision == "auto" and cuda_bf16())
    # the Trainer refuses bf16 without a GPU unless told it trains on the CPU
    return {"bf16": bf16, "use_cpu": bf16 and not torch.cuda.is_available()}


__all__ = ["LossTermsTrainer", "BatchSamplerTrainer", "IdleCoresCallback", "cpu_seconds", "cuda_bf16",
           "precision_arguments", "PRECISIONS"]
