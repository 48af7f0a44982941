"""The ablation table: each row's switches on tiny parts, a resumable run, and the page from known results."""

import dataclasses
import json
import math

import pytest
import torch

from dualspeechlm.configuration_codec_tokens import CodecTokensConfig
from dualspeechlm.configuration_dualspeechlm import DualSpeechLMConfig
from dualspeechlm.configuration_mel_codec import MelCodecConfig
from dualspeechlm.configuration_ustokenizer import USTokenizerConfig
from dualspeechlm.modeling_codec_tokens import CodecTokensModel
from dualspeechlm.processing_dualspeechlm import DualSpeechLMProcessor
from dualspeechlm.tasks import UNDERSTANDING_TASKS
from dualspeechlm.training import ablations
from dualspeechlm.training.ablation_page import ablation_page, plot_ablations, row_metrics
from dualspeechlm.training.ablations import (
    ROWS,
    AblationRecipe,
    AblationRunner,
    merged,
    stage3_recipe,
    task_mix,
    understanding_share,
)
from dualspeechlm.training.train_dualspeechlm import train_dualspeechlm

pytestmark = pytest.mark.usefixtures("one_thread")
ROW = {row.name: row for row in ROWS}


@pytest.fixture(scope="module")
def tiny_ablation(tiny_corpus, whisper_dir, tiny_parts, tmp_path_factory):
    """`tiny_ablation(work_dir, **overrides)`: the ablation recipe on the tiny corpus and tiny parts, one step per
    stage, one example per task; the encoder cache shared by the module's runs."""
    cache = tmp_path_factory.mktemp("ablation_cache")

    def recipe(work_dir, **overrides) -> AblationRecipe:
        return AblationRecipe.tiny(**{
            **dict(corpus=str(tiny_corpus), whisper=str(whisper_dir), cache_dir=str(cache),
                   codec=str(tiny_parts / "codec"), speaker_encoder=str(tiny_parts / "speaker_encoder"),
                   text_llm=str(tiny_parts / "text_llm"), main_job=str(work_dir / "no-main-job"),
                   work_dir=str(work_dir), output_dir=str(work_dir / "docs"),
                   tokenizer_steps=1, decoder_steps=1, stage3_steps=1, eval_limit=1,
                   tokenizer=dict(batch_size=2, logging_steps=1, warmup_steps=1,
                                  tokenizer_config=dict(codebook_size=32, kmeans_iters=2)),
                   stage3=dict(acoustic_config=dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                                    intermediate_size=32),
                               batch_size=2, logging_steps=1, warmup_steps=1, save_steps=100, eval_steps=0),
                   decoder={"batch-size": 2, "train-limit": 4, "eval-limit": 1}),
            **overrides})

    return recipe


def test_task_mixes_move_the_understanding_share_and_keep_each_sides_proportions():
    weights = {"tts": 60, "asr": 24, "s2tt": 7, "ser": 2, "t2st": 2, "sqa": 2, "sc": 1.5, "vc": 1.5}
    assert understanding_share(weights) == pytest.approx(0.35)
    for share in (0.2, 0.5):
        mix = task_mix(weights, share)
        assert sum(mix.values()) == pytest.approx(100) and understanding_share(mix) == pytest.approx(share)
        assert mix["asr"] / mix["s2tt"] == pytest.approx(24 / 7) and mix["tts"] / mix["vc"] == pytest.approx(40)
    assert merged({"a": 1, "config": {"x": 1, "y": 2}}, {"config": {"y": 3}, "b": 2}) == {
        "a": 1, "b": 2, "config": {"x": 1, "y": 3}}


def test_the_page_names_the_command_of_the_whole_table_whatever_rows_a_run_took():
    assert ablations.page_command(["--rows", "dualspeechlm", "no-coc", "--stage3-steps", "500"]) == (
        "dualspeechlm-ablate --stage3-steps 500")
    assert ablations.page_command(["--work-dir", "w", "--page-only"]) == "dualspeechlm-ablate --work-dir w"
    assert ablations.page_command(["--rows", "dualspeechlm", "--again"]) == "dualspeechlm-ablate"


def test_rows_run_in_the_order_given_those_of_the_shared_stage1_first(monkeypatch):
    order = []
    monkeypatch.setattr(AblationRunner, "check_inputs", lambda self: None)
    monkeypatch.setattr(AblationRunner, "measured", lambda self: {})
    monkeypatch.setattr(AblationRunner, "claim_work_folder", lambda self: None)
    monkeypatch.setattr(AblationRunner, "run_row", lambda self, row: order.append(row.name))
    monkeypatch.setattr(AblationRunner, "record", lambda self, name, result: None)
    monkeypatch.setattr(AblationRunner, "write_page", lambda self: "page")
    ablations.main(["--rows", "no-reconstruction-loss", "dualspeechlm-seed-1", "no-coc", "dualspeechlm-seed-1"])
    assert order == ["dualspeechlm-seed-1", "no-coc", "no-reconstruction-loss"]


def test_every_row_builds_and_trains_a_step_on_tiny_parts(tiny_ablation, tmp_path):
    """Each row's stage 1 and stage 3 recipes carry its switch into the trained folders."""
    recipe = tiny_ablation(tmp_path / "work")
    runner = AblationRunner(recipe, log=lambda message: None)
    for row in ROWS:
        tokenizer = runner.stage1(row)
        expected_tokens = {"no-understanding-loss": ("understanding_weight", 0.0),
                           "no-reconstruction-loss": ("reconstruction_weight", 0.0),
                           "kmeans-tokens": ("kmeans_tokens", True)}
        if row.codec_tokens:  # the codec's first codebook, at its frame rate
            tokens = CodecTokensConfig.from_pretrained(tokenizer)
            assert tokenizer.name == row.name and (tokens.codebook, tokens.codebook_size) == (0, 16)
            assert tokens.tokens_per_second == 50.0
        elif row.name in expected_tokens:
            tokens = USTokenizerConfig.from_pretrained(tokenizer)
            name, value = expected_tokens[row.name]
            assert tokenizer.name == row.name and getattr(tokens, name) == value, row.name
        else:
            tokens = USTokenizerConfig.from_pretrained(tokenizer)
            assert tokenizer.name == "shared" and (tokens.understanding_weight, tokens.kmeans_tokens) == (5.0, False)

        stage3 = stage3_recipe(row, recipe, tokenizer, tmp_path / row.name)
        assert stage3.steps == 1 and stage3.seed == (1 if row.name.endswith("seed-1") else 0)
        assert understanding_share(stage3.task_weights) == pytest.approx(row.understanding_share or 0.35)
        train_dualspeechlm(stage3)
        config = DualSpeechLMConfig.from_pretrained(tmp_path / row.name)
        assert (config.acoustic_loss_weight > 0) == row.speaks_through_acoustic_gpt, row.name
        assert config.num_speech_tokens == (16 if row.codec_tokens else 32), row.name
        assert config.semantic_supervision == (row.name != "no-semantic-supervision")
        assert config.coc_modes == (("both",) if row.name == "no-coc" else ("prompt", "target", "both"))
        log = json.loads((tmp_path / row.name / "training_log.json").read_text())
        assert log[-1]["step"] == 1 and torch.isfinite(torch.tensor(log[0]["loss"])), row.name


def test_a_run_measures_its_rows_continues_where_it_stopped_and_writes_the_page(tiny_ablation, tmp_path,
                                                                                monkeypatch):
    recipe = tiny_ablation(tmp_path / "work")
    command = "dualspeechlm-ablate --rows dualspeechlm baseline-semantic"
    runner = AblationRunner(recipe, command, log=lambda message: None)
    chosen = (ROW["dualspeechlm"], ROW["baseline-semantic"])
    runner.run(chosen)
    saved = json.loads(runner.results_file.read_text())
    assert saved["rows"].keys() == {"dualspeechlm", "baseline-semantic"} and saved["identity"] == recipe.identity()
    for result in saved["rows"].values():
        assert set(result["minutes"]) == {"stage1", "decoder", "stage3", "evaluation"}
        sim = result["metrics"]["tts_sim"]  # NaN where no generated clip is long enough to embed
        assert 0 <= result["metrics"]["asr_wer"] and (math.isnan(sim) or 0 <= sim <= 1)
    # the AcousticGPT row's USTokens were also rendered by the decoder the semantic-only row speaks through
    assert "tts_semantic_whisper_wer" in saved["rows"]["dualspeechlm"]["metrics"]

    text = (runner.output / "ABLATIONS.md").read_text()
    assert f"Written by `{command}`" in text
    assert "| dualspeechlm | USTokens in; USTokens, then AcousticGPT's codec codes out | " in text
    assert "| baseline-semantic | ASR WER (seen voices) | 4.2% -> 5.7% (worse) | " in text
    assert "Not measured yet: `baseline-acoustic`, `no-understanding-loss`" in text
    assert (runner.output / "ablations.png").stat().st_size > 0

    # measured rows are not trained again, also by a run with another work folder (a fresh clone holding the page)
    monkeypatch.setattr(ablations, "train_dualspeechlm", lambda *a, **k: pytest.fail("a measured row ran again"))
    AblationRunner(dataclasses.replace(recipe, work_dir=str(tmp_path / "fresh")), log=lambda m: None).run(chosen)
    assert runner.write_page().read_text().count("| baseline-semantic | ") >= 2  # rows table and claims
    with pytest.raises(ValueError, match="another recipe"):
        AblationRunner(dataclasses.replace(recipe, stage3_steps=2)).run(chosen)
    with pytest.raises(ValueError, match="models of another recipe"):
        AblationRunner(dataclasses.replace(recipe, stage3_steps=2, output_dir=str(tmp_path / "other"))).run(chosen)
    with pytest.raises(FileNotFoundError, match=r"make codec"):
        AblationRunner(dataclasses.replace(recipe, codec=str(tmp_path / "none"))).run(chosen)


def test_baseline_acoustic_reads_writes_and_speaks_the_codecs_tokens(tiny_ablation, tmp_path):
    runner = AblationRunner(tiny_ablation(tmp_path / "work"), log=lambda message: None)
    result = runner.run_row(ROW["baseline-acoustic"])
    assert 0 <= result["metrics"]["asr_wer"] and "tts_whisper_wer" in result["metrics"]
    folder = tmp_path / "work" / "baseline-acoustic"
    # the model's processor tokenizes audio with the codec, and the model speaks through a decoder of those tokens
    processor = DualSpeechLMProcessor.from_pretrained(folder / "model")
    assert isinstance(processor.ustokenizer, CodecTokensModel) and processor.num_speech_tokens == 16
    decoder = MelCodecConfig.from_pretrained(folder / "decoder")
    assert (decoder.ustoken_vocab_size, decoder.frames_per_ustoken, decoder.ustoken_decode_codebooks) == (16, 1, 0)
    assert DualSpeechLMConfig.from_pretrained(folder / "model").codec_config.ustoken_vocab_size == 16


def test_runners_side_by_side_keep_each_others_rows(tiny_ablation, tmp_path, monkeypatch):
    recipe = tiny_ablation(tmp_path / "work")
    runner, beside = (AblationRunner(recipe, log=lambda message: None) for _ in range(2))
    result = {"metrics": row_metrics(EVALUATION), "minutes": {"stage3": 1.0}, "machine": "test", "commit": None}

    def run_row(row):  # the other runner finishes a row while this one trains its own
        beside.write_page({**beside.measured(), "baseline-semantic": result})
        return result

    monkeypatch.setattr(runner, "run_row", run_row)
    runner.run((ROW["dualspeechlm"], ROW["baseline-semantic"]))  # baseline-semantic is measured by then: skipped
    saved = json.loads(runner.results_file.read_text())
    assert saved["rows"].keys() == {"dualspeechlm", "baseline-semantic"}


def test_a_row_measured_again_here_keeps_the_other_machines_result(tiny_ablation, tmp_path, monkeypatch):
    runner = AblationRunner(tiny_ablation(tmp_path / "work"), log=lambda message: None)

    def result(machine, asr_wer):
        return {"metrics": {**row_metrics(EVALUATION), "asr_wer": asr_wer}, "minutes": {"stage3": 1.0},
                "machine": machine, "commit": None}

    runner.write_page({"dualspeechlm": result("CPU B", 0.3), "dualspeechlm-seed-1": result("CPU B", 0.35),
                       "no-reconstruction-loss": result("CPU A", 0.2)})
    claim = "| no-reconstruction-loss{} | ASR WER (seen voices) | 4.2% -> 4.7% (worse) | {} |"
    page = runner.write_page().read_text()
    assert claim.format(" (against the full row of another machine)", "30.0% -> 20.0% (better) | reversed") in page
    runner.write_page({**runner.measured(), "dualspeechlm-seed-1": result("CPU A", 0.35)})
    assert "## Seed spread" not in runner.write_page().read_text()  # seeds 0 and 1 from two machines: no spread

    ran = []
    monkeypatch.setattr(ablations, "describe_machine", lambda: "CPU A")
    monkeypatch.setattr(runner, "run_row", lambda row: ran.append(row.name) or result("CPU A", 0.1))
    chosen = (ROW["dualspeechlm"], ROW["no-reconstruction-loss"])
    runner.run(chosen)
    assert ran == []  # both measured, wherever
    runner.run(chosen, again=True)
    runner.run(chosen, again=True)
    assert ran == ["dualspeechlm"]  # measured on this machine once, then found here
    runner.write_page({**runner.measured(), "dualspeechlm-seed-1": result("CPU B", 0.35)})

    saved = runner.saved()
    assert saved["rows"]["dualspeechlm"]["machine"] == "CPU A"
    assert [other["machine"] for other in saved["other_machines"]["dualspeechlm"]] == ["CPU B"]
    assert saved["machine"] == "CPU A; CPU B"
    page = (runner.output / "ABLATIONS.md").read_text()
    assert "| dualspeechlm, another machine | the same row, measured on CPU B | 30.0% | " in page
    assert claim.format("", "10.0% -> 20.0% (worse) | held") in page  # its own machine's full row
    assert "| dualspeechlm (seed 0 vs 1) | 5.0 pts | " in page  # seed 1 against seed 0 of the same machine
    assert "- CPU B: `dualspeechlm`, `dualspeechlm-seed-1`\n" in page


def test_the_main_jobs_row_stays_on_a_page_written_without_its_folder(tiny_ablation, tmp_path):
    main_job = tmp_path / "main-job"
    runner = AblationRunner(tiny_ablation(tmp_path / "work", main_job=str(main_job)), log=lambda message: None)
    assert "The main job's model was not at hand" in runner.write_page().read_text()
    main_job.mkdir()
    (main_job / "evaluation.json").write_text(json.dumps(EVALUATION))
    runner.write_page()
    (main_job / "evaluation.json").unlink()  # a fresh clone: the page and its ablations.json only
    page = runner.write_page().read_text()
    assert json.loads(runner.results_file.read_text())["main_job"] == row_metrics(EVALUATION)
    assert "| main job (full length) | " in page and "not at hand" not in page


EVALUATION = {"splits": {
    "test": {"asr": {"wer": 0.1}, "s2tt": {"bleu": 12.5}, "ser": {"accuracy": 0.5},
             "tts": {"whisper_wer_generated": 0.9, "pocketsphinx_wer_generated": 0.95, "sim": 0.61,
                     "whisper_wer_reference": 0.12, "pocketsphinx_wer_reference": 0.28},
             "tts_semantic": {"whisper_wer_generated": 0.3}},
    "test_unseen_voice": {"asr": {"wer": 0.2}}}}


def known_results() -> dict:
    full = row_metrics(EVALUATION)
    scaled = {key: value * 1.5 for key, value in full.items()}
    return {
        "command": "dualspeechlm-ablate", "machine": "2 cores of a test CPU, no GPU, torch 2",
        "recipe": ["stage 1: 1 step"],
        "rows": {"dualspeechlm": {"metrics": full},
                 "dualspeechlm-seed-1": {"metrics": {**full, "asr_wer": 0.12}},
                 "no-reconstruction-loss": {"metrics": {**full, "asr_wer": 0.11, "tts_whisper_wer": 0.8}},
                 "baseline-semantic": {"metrics": scaled},
                 "dualspeechlm-understanding-50": {"metrics": {**full, "asr_wer": 0.05, "tts_whisper_wer": 0.95}}},
        "descriptions": {row.name: row.description for row in ROWS},
        "paper": {row.name: row.paper for row in ROWS if row.paper},
        "paper_rows": {"kmeans-tokens": "HuBERT tokens"},
        "mix": {"dualspeechlm": ("dualspeechlm", 0.35), "dualspeechlm-understanding-50": ("dualspeechlm", 0.5)},
        "main_job": None,
    }


def test_row_metrics_read_an_evaluation():
    assert row_metrics(EVALUATION) == {
        "asr_wer": 0.1, "asr_wer_unseen": 0.2, "s2tt_bleu": 12.5, "ser_accuracy": 0.5, "tts_whisper_wer": 0.9,
        "tts_pocketsphinx_wer": 0.95, "tts_sim": 0.61, "tts_whisper_wer_reference": 0.12,
        "tts_pocketsphinx_wer_reference": 0.28, "tts_semantic_whisper_wer": 0.3}


def test_the_page_of_known_results(tmp_path):
    results = known_results()
    lines = ablation_page(results).splitlines()
    assert ("| dualspeechlm | USTokens in; USTokens, then AcousticGPT's codec codes out | 10.0% (4.2%) | 20.0% | "
            "12.5 (19.7) | 50.0% (60.9%) | 90.0% (9.2%) | 95.0% | 0.61 (0.90) |") in lines
    # the paper's direction: held, reversed, or a change no larger than the seed spread (ASR: 2 points)
    assert ("| baseline-semantic | TTS WER (Whisper) | 9.2% -> 21.7% (worse) | 90.0% -> 135.0% (worse) | held |"
            in lines)
    assert ("| baseline-semantic | SER accuracy | 60.9% -> 51.9% (worse) | 50.0% -> 75.0% (better) | reversed |"
            in lines)
    assert ("| no-reconstruction-loss | ASR WER (seen voices) | 4.2% -> 4.7% (worse) | 10.0% -> 11.0% (worse) | "
            "within noise |") in lines
    assert ("| no-reconstruction-loss | TTS WER (Whisper) | 9.2% -> 52.5% (worse) | 90.0% -> 80.0% (better) | "
            "reversed |") in lines
    assert "| dualspeechlm (seed 0 vs 1) | 2.0 pts | 0.0 pts | 0.0 | 0.0 pts | 0.0 pts | 0.0 pts | 0.00 |" in lines
    assert "| dualspeechlm | 35% | 10.0% | 90.0% |" in lines and "| dualspeechlm | 50% | 5.0% | 95.0% |" in lines
    assert any(line.startswith("Not measured yet: `baseline-acoustic`, `no-understanding-loss`, ") for line in lines)
    assert "dualspeechlm 30.0%" in "\n".join(lines)  # the AcousticGPT row's USTokens through the decoder
    assert "The main job's model was not at hand for this page" in "\n".join(lines)
    assert plot_ablations(results, tmp_path / "ablations.png").stat().st_size > 10_000

    # the noise comes from any row measured under two seeds, here Baseline-Semantic's (ASR: 5 points)
    rows = {name: result for name, result in results["rows"].items() if name != "dualspeechlm-seed-1"}
    semantic = rows["baseline-semantic"]["metrics"]
    rows["baseline-semantic-seed-1"] = {"metrics": {**semantic, "asr_wer": semantic["asr_wer"] + 0.05}}
    assert ("| no-reconstruction-loss | ASR WER (seen voices) | 4.2% -> 4.7% (worse) | 10.0% -> 11.0% (worse) | "
            "within noise |") in ablation_page(dict(results, rows=rows)).splitlines()

    assert "Where the rows were measured" not in ablation_page(results)  # one machine (here: none recorded)
    two_machines = {name: dict(result, machine="CPU A" if name == "dualspeechlm" else "CPU B")
                    for name, result in results["rows"].items()}
    text = ablation_page(dict(results, rows=two_machines))
    assert "- CPU A: `dualspeechlm`\n" in text
    assert ("- CPU B: `baseline-semantic`, `no-reconstruction-loss`, `dualspeechlm-seed-1`, "
            "`dualspeechlm-understanding-50`\n") in text

    without_full = dict(results, rows={"baseline-semantic": results["rows"]["baseline-semantic"]})
    assert "None yet: the claims compare rows with `dualspeechlm`" in ablation_page(without_full)


def test_every_row_names_a_known_task_mix_and_paper_metrics():
    from dualspeechlm.training.ablation_page import BETTER

    assert len({row.name for row in ROWS}) == len(ROWS)
    for row in ROWS:
        assert set(row.paper) <= set(BETTER), row.name
    assert {row.understanding_share for row in ROWS} == {None, 0.2, 0.5}
    assert set(UNDERSTANDING_TASKS) <= set(ablations.DualSpeechLMRecipe.tiny().task_weights)
