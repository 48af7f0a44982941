"""Stage 3's data: the eight tasks' examples from cached corpus rows, single-task batches, and the collator.

Each cached row (training/token_cache.py) yields the examples of its config's tasks, as the dicts
`dualspeechlm.tasks.build_inputs` reads: `task`, the prompt's text fields, `speech_ids` (the
input speech's USTokens), and `answer` (text) or `answer_speech_ids` + `speaker` (512-d) + `codes`
`[n_q, frames]` (when cached: AcousticGPT's targets) for generation tasks. The paper trains on
single-task batches mixed by a multiplexer; `TaskBatchSampler` does that with per-task weights.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

from dualspeechlm.tasks import build_inputs, get_task


def _target(row: dict, column: str) -> dict:
    target = {"answer_speech_ids": list(row[f"{column}_ustokens"]),
              "speaker": np.asarray(row[f"{column}_speaker"], dtype=np.float32)}
    if f"{column}_codes" in row:  # cached only for a recipe that trains AcousticGPT
        frames = int(row[f"{column}_frames"])
        target["codes"] = np.asarray(row[f"{column}_codes"], dtype=np.int64).reshape(-1, frames)
    return target


def task_example(task: str, row: dict) -> dict:
    """The `task` example of one cached row of the task's corpus config (see the module docstring)."""
    spec = get_task(task)
    example = {"task": task, "answer": row[spec.answer_column], **{name: row[name] for name in spec.prompt_fields}}
    if spec.speech_input:
        example["speech_ids"] = [i for column in spec.input_audio for i in row[f"{column}_ustokens"]]
    if spec.speech_output:
        example.update(_target(row, spec.answer_audio))
    return example


class TaskExamples(torch.utils.data.Dataset):
    """The examples of `tasks` over cached corpus splits `{config: datasets.Dataset}`; `task_of[i]`
    names the task of example `i` (a row of a config shared by two tasks gives two examples)."""

    def __init__(self, cached: dict, tasks: tuple[str, ...]):
        self.cached = {config: rows.with_format("numpy") for config, rows in cached.items()}
        self.index = [(task, i) for task in tasks for i in range(len(cached[get_task(task).corpus_config]))]
        self.task_of = [task for task, _ in self.index]

    def __len__(self) -> int:
        return len(self.index)

    def lengths(self) -> list[int]:
        """The USTokens each example reads and writes: its length, but for its short text (one pass over the rows)."""
        return [len(example.get("speech_ids", ())) + len(example.get("answer_speech_ids", ())) for example in self]

    def __getitem__(self, item: int) -> dict:
        task, i = self.index[item]
        return task_example(task, self.cached[get_task(task).corpus_config][i])


class TaskBatchSampler(Sampler[list[int]]):
    """Batches of one task each: every batch draws its task with probability proportional to
    `weights[task]` (default: the task's number of examples), then `batch_size` of its examples
    (shuffled, without replacement until the task's examples run out). An epoch is
    `len(task_of) // batch_size` batches.

    With `lengths` (each example's length, e.g. `TaskExamples.lengths()`), a batch holds examples of like
    length, as the Trainer's `group_by_length` does: each fresh shuffle of a task is cut into runs of
    `group_batches` batches, each run sorted by length and cut into batches, and those batches shuffled, so the
    padding (about 18% of stage 3's tokens without it) nearly vanishes and the draw stays random."""

    def __init__(self, task_of: list[str], batch_size: int, weights: dict[str, float] | None = None, seed: int = 0,
                 lengths: list[int] | None = None, group_batches: int = 50):
        if lengths is not None and len(lengths) != len(task_of):
            raise ValueError(f"{len(lengths)} lengths for {len(task_of)} examples")
        self.batch_size, self.seed, self.epoch = batch_size, seed, 0
        self.lengths, self.group_batches = lengths, group_batches
        self.members = {}
        for index, task in enumerate(task_of):
            self.members.setdefault(task, []).append(index)
        weights = weights or {}
        if unknown := sorted(set(weights) - set(self.members)):
            raise ValueError(f"weights for tasks without examples: {unknown}")
        self.tasks = sorted(self.members)
        raw = np.array([weights.get(task, len(self.members[task])) for task in self.tasks], dtype=float)
        if (raw < 0).any() or raw.sum() <= 0:
            raise ValueError(f"task weights must be non-negative with a positive sum, "
                             f"got {dict(zip(self.tasks, raw))}")
        self.probabilities = raw / raw.sum()
        self.num_batches = max(1, len(task_of) // batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng(self.seed + self.epoch)
        # a generator apart, so grouping leaves the tasks' draws alone
        batch_order = np.random.default_rng((self.seed, self.epoch))
        queues = {task: [] for task in self.tasks}
        for _ in range(self.num_batches):
            task = self.tasks[rng.choice(len(self.tasks), p=self.probabilities)]
            if len(queues[task]) < self.batch_size:  # refill with a fresh shuffle
                queues[task] = self._grouped(queues[task] + rng.permutation(self.members[task]).tolist() * math.ceil(
                    self.batch_size / len(self.members[task])), batch_order)
            batch, queues[task] = queues[task][: self.batch_size], queues[task][self.batch_size :]
            yield batch

    def _grouped(self, queue: list[int], rng: np.random.Generator) -> list[int]:
        """`queue` (shuffled) reordered so that each `batch_size` items in a row have like lengths (class
        docstring); its last `len(queue) % batch_size` items, which wait for the next shuffle, stay last."""
        if self.lengths is None:
            return queue
        cut, size = len(queue) - len(queue) % self.batch_size, self.batch_size * self.group_batches
        runs = [sorted(queue[start : min(start + size, cut)], key=self.lengths.__getitem__)
                for start in range(0, cut, size)]
        batches = [run[i : i + self.batch_size] for run in runs for i in range(0, len(run), self.batch_size)]
        return [i for b in rng.permutation(len(batches)) for i in batches[b]] + queue[cut:]


class DualSpeechLMCollator:
    """Examples -> `DualSpeechLMForConditionalGeneration.forward` inputs: `tasks.build_inputs` builds
    the token sequences (as at inference); speaker embeddings `[batch, 512]` (zeros for understanding items);
    acoustic codes, where the examples have them, padded to `[batch, n_q, frames]` + `acoustic_lengths`."""

    def __init__(self, tokenizer, config):
        self.tokenizer, self.config = tokenizer, config
        self.num_codebooks, self.speaker_size = config.num_codebooks, config.speaker_embedding_size

    def __call__(self, examples: list[dict]) -> dict:
        batch = build_inputs(self.tokenizer, self.config, examples, with_answers=True)
        speakers = torch.zeros(len(examples), self.speaker_size)
        for row, ex in enumerate(examples):
            if "speaker" in ex:
                speakers[row] = torch.from_numpy(ex["speaker"])
        batch["speaker_embeddings"] = speakers
        if with_codes := [ex for ex in examples if "codes" in ex]:
            frames = max(ex["codes"].shape[-1] for ex in with_codes)
            codes = torch.zeros(len(examples), self.num_codebooks, frames, dtype=torch.long)
            lengths = torch.ones(len(examples), dtype=torch.long)
            for row, ex in enumerate(examples):
                if "codes" in ex:
                    codes[row, :, : ex["codes"].shape[-1]] = torch.from_numpy(ex["codes"])
                    lengths[row] = ex["codes"].shape[-1]
            batch.update(acoustic_codes=codes, acoustic_lengths=lengths)
        return batch


__all__ = ["task_example", "TaskExamples", "TaskBatchSampler", "DualSpeechLMCollator"]
