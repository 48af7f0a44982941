"""Data-parallel training: one Trainer step under `accelerate launch` with two CPU processes equals
the same step in one process on the same global batch; every shipped accelerate config parses."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dualspeechlm.testing_utils import tiny_random_model_and_processor

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "training" / "accelerate_configs"

ONE_STEP = """
import json, sys
import numpy as np, torch
from torch.utils.data import BatchSampler, SequentialSampler
from transformers import TrainingArguments
out = sys.argv[1]
from dualspeechlm.testing_utils import tiny_random_model_and_processor, without_dropout
from dualspeechlm.training.multitask import DualSpeechLMCollator
from dualspeechlm.training.trainer import BatchSamplerTrainer

model, processor = tiny_random_model_and_processor()
# No random draws that depend on how the batch is split: Chain-of-Condition modes and dropout masks.
model.config.coc_tasks = []
without_dropout(model)
speaker = np.full(512, 0.1, np.float32)
# The global batch. Its two halves (one per process) hold equally many answer tokens and codec
# frames, so the mean of the per-process mean losses is the global mean loss.
examples = [
    {"task": "asr", "speech_ids": [1, 2, 3, 4], "answer": "anna saw the cat"},
    {"task": "tts", "text": "the cat", "answer_speech_ids": [5, 6, 7], "codes": np.arange(12).reshape(2, 6),
     "speaker": speaker},
    {"task": "asr", "speech_ids": [9, 8, 7, 6], "answer": "anna saw the cat"},
    {"task": "tts", "text": "the dog", "answer_speech_ids": [7, 1, 5], "codes": np.arange(12, 24).reshape(2, 6),
     "speaker": -speaker},
]
args = TrainingArguments(output_dir=out + ".run", max_steps=1, per_device_train_batch_size=2, optim="sgd",
                         learning_rate=0.1, lr_scheduler_type="constant", logging_steps=1, save_strategy="no",
                         report_to=[], seed=0, use_cpu=True, remove_unused_columns=False, label_names=["labels"],
                         dataloader_pin_memory=False, accelerator_config={"split_batches": True})
trainer = BatchSamplerTrainer(model=model, args=args, train_dataset=examples,
                              batch_sampler=BatchSampler(SequentialSampler(range(4)), batch_size=4, drop_last=False),
                              data_collator=DualSpeechLMCollator(processor.tokenizer, model.config))
trainer.train()
trainer.leave_process_group()
if trainer.is_world_process_zero():
    torch.save(trainer.model.state_dict(), out + ".pt")
    json.dump({"processes": trainer.accelerator.num_processes, "log": trainer.state.log_history[0]}, open(out, "w"))
"""


def run_step(command: list[str], out: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ""}
    result = subprocess.run(command + [str(out)], capture_output=True, text=True, env=env,
                            timeout=300, cwd=out.parent)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(out.read_text())


def test_two_process_step_equals_one_process_on_the_same_global_batch(tmp_path):
    script = tmp_path / "one_step.py"
    script.write_text(ONE_STEP)
    single = run_step([sys.executable, str(script)], tmp_path / "single.json")
    accelerate = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                  str(CONFIGS / "cpu_two_processes.yaml"), "--main_process_port", "0", str(script)]
    parallel = run_step(accelerate, tmp_path / "parallel.json")
    assert (single["processes"], parallel["processes"]) == (1, 2)
    assert parallel["log"]["loss"] == pytest.approx(single["log"]["loss"], rel=1e-5)
    for term in ("llm_loss", "acoustic_loss"):  # gathered from both processes
        assert parallel["log"][term] == pytest.approx(single["log"][term], rel=1e-5)
    one, two = torch.load(tmp_path / "single.json.pt"), torch.load(tmp_path / "parallel.json.pt")
    for name, weight in one.items():
        torch.testing.assert_close(two[name], weight, rtol=1e-4, atol=1e-6, msg=name)
    initial = tiny_random_model_and_processor()[0].state_dict()
    trained = {name: weight for name, weight in one.items() if not name.startswith("codec_model.")}
    assert sum(not torch.equal(initial[name], weight) for name, weight in trained.items()) > len(trained) // 2
    assert all(torch.equal(initial[name], weight) for name, weight in one.items() if name not in trained)  # frozen


@pytest.mark.parametrize("name, kind", [("one_gpu", "NO"), ("multi_gpu", "MULTI_GPU"), ("fsdp", "FSDP"),
                                        ("deepspeed_zero2", "DEEPSPEED"), ("cpu_two_processes", "MULTI_GPU")])
def test_accelerate_configs_parse(name, kind):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(CONFIGS / f"{name}.yaml"))
    assert config.distributed_type.value == kind
    if kind == "DEEPSPEED":
        assert config.deepspeed_config["zero_stage"] == 2
    if kind == "FSDP":
        assert config.fsdp_config["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
