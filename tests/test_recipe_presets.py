"""Recipe presets are YAML files; command lines apply preset, then --config, then flags."""

import dataclasses
from types import SimpleNamespace

import pytest
import torch
import yaml
from transformers import TrainingArguments

from dualspeechlm.training import trainer as trainer_module
from dualspeechlm.training.ablations import AblationRecipe
from dualspeechlm.training.recipe_cli import PRESETS, recipe_from_args, recipe_parser
from dualspeechlm.training.train_dualspeechlm import DualSpeechLMRecipe
from dualspeechlm.training.train_ustokenizer import USTokenizerRecipe
from dualspeechlm.training.trainer import IdleCoresCallback, LossTermsTrainer, cpu_seconds, precision_arguments


def test_every_preset_file_loads_and_the_paper_presets_hold_the_papers_setup():
    assert sorted(p.name for p in PRESETS.glob("*.yaml")) == [
        "ablations_tiny.yaml", "dualspeechlm_paper.yaml", "dualspeechlm_tiny.yaml", "ustokenizer_paper.yaml",
        "ustokenizer_tiny.yaml"]
    assert AblationRecipe.tiny() == AblationRecipe(tokenizer_steps=1000, decoder_steps=2000, stage3_steps=1000,
                                                   eval_limit=40)
    assert DualSpeechLMRecipe.tiny() == DualSpeechLMRecipe(
        acoustic_loss_weight=0.0, steps=9000,
        task_weights={"tts": 60, "asr": 24, "s2tt": 7, "ser": 2, "t2st": 2, "sqa": 2, "sc": 1.5, "vc": 1.5},
        speech_generation={"do_sample": False, "num_beams": 8, "max_new_tokens": 400})
    paper = DualSpeechLMRecipe.paper()
    assert (paper.llm, paper.lora, paper.lora_r, paper.learning_rate, paper.steps, paper.codec) == (
        "microsoft/Phi-3.5-mini-instruct", True, 16, 1e-4, 60000, "swiss-ai/wavtokenizer-large-unify-40token")
    assert USTokenizerRecipe.tiny().freeze_llm is False
    stage1 = USTokenizerRecipe.paper(steps=5)
    assert (stage1.whisper, stage1.llm, stage1.freeze_llm, stage1.steps) == (
        "openai/whisper-medium", "meta-llama/Llama-3.2-1B", True, 5)


def test_command_line_applies_preset_then_config_then_flags(tmp_path, capsys):
    config = tmp_path / "mine.yaml"
    config.write_text("steps: 7\nlearning_rate: 0.01\nacoustic_config: {hidden_size: 64}\ntask_weights: {asr: 3}\n")
    parser = recipe_parser(DualSpeechLMRecipe, "stage 3")
    args = vars(parser.parse_args(["--preset", "paper", "--config", str(config), "--steps", "9"]))
    recipe = recipe_from_args(DualSpeechLMRecipe, args)
    assert (recipe.llm, recipe.steps, recipe.learning_rate) == ("microsoft/Phi-3.5-mini-instruct", 9, 0.01)
    assert recipe.acoustic_config == {"hidden_size": 64} and recipe.task_weights == {"asr": 3}

    with pytest.raises(SystemExit) as exit_info:
        recipe_from_args(DualSpeechLMRecipe, vars(parser.parse_args(["--config", str(config), "--print-config"])))
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed == {**dataclasses.asdict(DualSpeechLMRecipe.tiny(steps=7, learning_rate=0.01,
                       acoustic_config={"hidden_size": 64}, task_weights={"asr": 3})), "tasks": list(recipe.tasks)}
    with pytest.raises(SystemExit):  # a command offers the presets whose files exist (the ablations: tiny only)
        recipe_parser(AblationRecipe, "ablations").parse_args(["--preset", "paper"])


def test_bad_config_files_are_clear_errors(tmp_path):
    typo = tmp_path / "typo.yaml"
    typo.write_text("stepz: 3\n")
    parser = recipe_parser(USTokenizerRecipe, "stage 1")
    with pytest.raises(ValueError, match=r"\['stepz'\] are not fields of USTokenizerRecipe"):
        recipe_from_args(USTokenizerRecipe, vars(parser.parse_args(["--config", str(typo)])))
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="must hold a mapping"):
        recipe_from_args(USTokenizerRecipe, vars(parser.parse_args(["--config", str(tmp_path / "list.yaml")])))


@pytest.mark.parametrize("recipe_class", [DualSpeechLMRecipe, USTokenizerRecipe])
def test_use_idle_cores_is_off_unless_asked_and_clipping_has_a_flag(recipe_class):
    parser = recipe_parser(recipe_class, "a stage")
    default = recipe_from_args(recipe_class, vars(parser.parse_args([])))
    assert default.use_idle_cores is False and default.max_grad_norm == 1.0
    asked = recipe_from_args(recipe_class, vars(parser.parse_args(["--use-idle-cores", "--max-grad-norm", "0"])))
    assert asked.use_idle_cores is True and asked.max_grad_norm == 0.0


def test_idle_cores_callback_takes_the_cores_the_other_processes_leave_idle():
    # (wall seconds, machine busy CPU seconds, this process' CPU seconds) at steps 0, 10, 20, 30, 40
    readings = iter([(0, 0, 0), (10, 10, 10), (20, 30, 25), (30, 50, 35), (40, 60, 45)])
    callback = IdleCoresCallback(every=10, cores=2, usage=lambda: next(readings))
    state, threads_before = SimpleNamespace(global_step=5), torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        callback.on_step_end(None, state, None)  # not a multiple of `every`: nothing read, nothing changed
        expected = {0: 1,   # the first reading: nothing to compare with yet
                    10: 2,  # only this process was busy: the other core is idle
                    20: 1,  # another process used half a core (not three quarters idle)
                    30: 1,  # ... and then a whole one
                    40: 2}  # it is done
        for step, threads in expected.items():
            state.global_step = step
            callback.on_step_end(None, state, None)
            assert torch.get_num_threads() == threads, step
    finally:
        torch.set_num_threads(threads_before)


def test_cpu_seconds_reads_this_machine():
    wall, busy, own = cpu_seconds()
    sum(range(5_000_000))  # some work of this process (CPU times tick every 10 ms)
    later = cpu_seconds()
    assert later[0] > wall and later[1] >= busy and later[2] > own >= 0


def test_precision_is_bf16_where_asked_or_on_a_gpu_that_has_it(monkeypatch):
    assert precision_arguments("fp32") == {"bf16": False, "use_cpu": False}
    assert precision_arguments("bf16") == {"bf16": True, "use_cpu": not torch.cuda.is_available()}
    for gpu in (True, False):
        monkeypatch.setattr(trainer_module, "cuda_bf16", lambda: gpu)
        assert precision_arguments("auto")["bf16"] is gpu
    with pytest.raises(ValueError, match="precision must be one of"):
        precision_arguments("fp16")
    parser = recipe_parser(DualSpeechLMRecipe, "stage 3")
    assert recipe_from_args(DualSpeechLMRecipe, vars(parser.parse_args([]))).precision == "fp32"
    assert recipe_from_args(DualSpeechLMRecipe, vars(parser.parse_args(["--precision", "bf16"]))).precision == "bf16"
    assert DualSpeechLMRecipe.paper().precision == USTokenizerRecipe.paper().precision == "auto"


class _DtypeRecorder(torch.nn.Module):
    """A linear regression that records the dtype its matmul ran in."""

    def __init__(self):
        super().__init__()
        self.linear, self.seen = torch.nn.Linear(4, 1), []

    def forward(self, x, y):
        prediction = self.linear(x)
        self.seen.append(prediction.dtype)
        return {"loss": torch.nn.functional.mse_loss(prediction.float(), y)}


@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_the_trainer_steps_under_the_precision_asked(tmp_path, precision, dtype):
    data = [{"x": torch.randn(4), "y": torch.randn(1)} for _ in range(8)]
    model = _DtypeRecorder()
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, report_to=[],
                             save_strategy="no", disable_tqdm=True, dataloader_pin_memory=False,
                             **precision_arguments(precision))
    LossTermsTrainer(model=model, args=args, train_dataset=data).train()
    assert model.seen == [dtype, dtype] and model.linear.weight.dtype == torch.float32  # fp32 weights
