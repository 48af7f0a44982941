"""Stage 3 plumbing: task examples from cached rows, single-task batches, LoRA targets per backbone."""

from collections import Counter

import numpy as np
import pytest
import torch

from dualspeechlm.configuration_dualspeechlm import DualSpeechLMConfig
from dualspeechlm.modeling_dualspeechlm import DualSpeechLMForConditionalGeneration
from dualspeechlm.training.lora import apply_lora, lora_target_modules, merge_lora
from dualspeechlm.training.multitask import TaskBatchSampler, TaskExamples, task_example

pytestmark = pytest.mark.usefixtures("one_thread")


def cached_row(**columns):
    target = {"codes": np.arange(6, dtype=np.int16), "frames": 3, "speaker": np.ones(4, np.float32),
              "ustokens": [7, 8]}
    row = {"text": "anna saw the cat", "audio_ustokens": [1, 2, 3], "style": "fast", "question": "who?",
           "answer": "anna", "question_audio_ustokens": [4, 5], "language": "es", "translation": "anna vio el gato"}
    for column in ("audio", "answer_audio", "translation_audio", "target_audio"):
        row.update({f"{column}_{key}": value for key, value in target.items()
                    if column != "audio" or key != "ustokens"})
    row.update(columns)
    return row


def test_task_examples_take_the_right_columns():
    row = cached_row()
    assert task_example("asr", row) == {"task": "asr", "speech_ids": [1, 2, 3], "answer": "anna saw the cat"}
    assert task_example("ser", row)["answer"] == "fast"
    assert task_example("sqa", row)["question"] == "who?"
    assert task_example("s2tt", row)["answer"] == "anna vio el gato" and task_example("s2tt", row)["language"] == "es"
    sc = task_example("sc", row)
    assert sc["speech_ids"] == [1, 2, 3, 4, 5] and sc["answer_speech_ids"] == [7, 8]  # passage, then question
    tts = task_example("tts", row)
    assert tts["text"] == "anna saw the cat" and "speech_ids" not in tts and tts["answer_speech_ids"] == [1, 2, 3]
    assert tts["codes"].shape == (2, 3) and tts["codes"][1].tolist() == [3, 4, 5]  # [n_q * frames] row-major
    assert task_example("t2st", row)["language"] == "es"
    with pytest.raises(ValueError, match="unknown task 'dance'"):
        task_example("dance", row)


def test_task_batches_hold_one_task_follow_weights_and_repeat_with_the_seed():
    task_of = ["asr"] * 300 + ["tts"] * 100 + ["ser"] * 20
    sampler = TaskBatchSampler(task_of, batch_size=8, weights={"asr": 1, "tts": 1, "ser": 2}, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 420 // 8
    tasks = [task_of[b[0]] for b in batches]
    assert all(len(b) == 8 and {task_of[i] for i in b} == {task} for b, task in zip(batches, tasks))
    counts = Counter(tasks)
    assert counts["ser"] > counts["asr"] and counts["ser"] > counts["tts"]  # weight 2 vs 1 each
    assert batches == list(TaskBatchSampler(task_of, 8, {"asr": 1, "tts": 1, "ser": 2}, seed=3))
    sampler.set_epoch(1)
    assert list(sampler) != batches
    default = Counter(task_of[b[0]] for b in TaskBatchSampler(task_of, 4, seed=0))  # proportional to size
    assert default["asr"] > default["tts"] > default["ser"]
    with pytest.raises(ValueError, match="without examples"):
        TaskBatchSampler(task_of, 8, {"vc": 1})
    with pytest.raises(ValueError, match="non-negative"):
        TaskBatchSampler(task_of, 8, {"asr": -1})


def test_batches_grouped_by_length_pad_less_and_keep_the_draws_random():
    task_of = ["asr"] * 300 + ["tts"] * 100 + ["ser"] * 20
    lengths = np.random.default_rng(0).integers(10, 200, len(task_of)).tolist()
    plain = list(TaskBatchSampler(task_of, 8, seed=3))
    grouped = list(TaskBatchSampler(task_of, 8, seed=3, lengths=lengths, group_batches=5))
    assert [task_of[b[0]] for b in grouped] == [task_of[b[0]] for b in plain]  # the same task draws
    assert all(len(b) == 8 and len({task_of[i] for i in b}) == 1 for b in grouped)

    def padded(batches):
        return sum(max(lengths[i] for i in b) * len(b) for b in batches) / sum(lengths[i] for b in batches for i in b)

    assert padded(plain) > 1.5 and padded(grouped) < 1.2
    longest = [max(lengths[i] for i in b) for b in grouped]
    assert longest != sorted(longest) and longest != sorted(longest, reverse=True)  # batches in random order
    first_pass = [i for b in grouped if task_of[b[0]] == "asr" for i in b][: 300 // 8 * 8]
    assert len(set(first_pass)) == len(first_pass)  # a shuffle of asr is drawn without replacement
    assert grouped == list(TaskBatchSampler(task_of, 8, seed=3, lengths=lengths, group_batches=5))
    with pytest.raises(ValueError, match="3 lengths for 420 examples"):
        TaskBatchSampler(task_of, 8, lengths=[1, 2, 3])


def test_an_examples_length_counts_the_ustokens_it_reads_and_writes():
    import datasets

    rows = datasets.Dataset.from_list([cached_row(), cached_row(audio_ustokens=[1] * 10)])
    examples = TaskExamples({"speech": rows, "qa": rows}, ("asr", "tts", "sc"))
    assert examples.lengths() == [3, 10, 3, 10, 3 + 2 + 2, 10 + 2 + 2]  # asr reads the audio, tts writes it, sc both


@pytest.mark.parametrize("backbone", ["llama", "qwen2", "phi3"])
def test_lora_targets_every_projection_and_merges_to_the_same_model(backbone):
    torch.manual_seed(0)
    model = DualSpeechLMForConditionalGeneration(DualSpeechLMConfig.tiny(backbone)).eval()
    peft_model = apply_lora(model, r=4, alpha=8, dropout=0.0)
    names = [name for name, _ in peft_model.named_parameters()]
    layers = model.config.text_config.num_hidden_layers
    for target in lora_target_modules(backbone):
        assert sum(f".{target}.lora_A" in name for name in names) == layers, target
    assert not any("acoustic_gpt" in name and "lora_" in name for name in names)  # LoRA on the backbone only
    trainable = {name for name, p in peft_model.named_parameters() if p.requires_grad}
    assert any("acoustic_gpt" in name for name in trainable) and any("embed_tokens" in name for name in trainable)
    assert not any(name.endswith("q_proj.base_layer.weight") or name.endswith("qkv_proj.base_layer.weight")
                   for name in trainable)
    with torch.no_grad():  # non-zero adapters, so merging has something to merge
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    ids = torch.randint(3, 60, (2, 9))
    before = peft_model(input_ids=ids).logits
    merged = merge_lora(peft_model)
    assert isinstance(merged, DualSpeechLMForConditionalGeneration)
    assert not any("lora_" in name for name, _ in merged.named_parameters())
    assert torch.allclose(merged(input_ids=ids).logits, before, atol=1e-4)


def test_lora_refuses_an_unknown_backbone():
    with pytest.raises(ValueError, match="no LoRA target modules known for backbone 'gpt2'"):
        lora_target_modules("gpt2")
