"""The performance page (bench/performance*.py): its writer on known figures, its measurements on tiny random parts,
the stop on a missing folder, and the command end to end on tiny folders."""

import json
import shutil
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from bench import performance_training
from bench.bench_codec import codec_speeds
from bench.bench_generation import SETTINGS, never_stops, speech_generation_speeds
from bench.bench_ustokenizer import ustokenizer_speeds
from bench.common import training_step
from bench.performance import main
from bench.performance_page import performance_page
from bench.performance_speech import NotReadyError, asr_speeds, speaking_model
from bench.performance_training import training_speeds
from dualspeechlm.codecs import MelCodecConfig, MelCodecModel
from dualspeechlm.configuration_ustokenizer import USTokenizerConfig
from dualspeechlm.feature_extraction_ustokenizer import USTokenizerFeatureExtractor
from dualspeechlm.modeling_ustokenizer import USTokenizerModel
from dualspeechlm.pipelines_dualspeechlm import save_for_pipelines
from dualspeechlm.testing_utils import tiny_random_model_and_processor

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_ENCODER = dict(d_model=32, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=64, decoder_layers=1,
                    decoder_attention_heads=2, decoder_ffn_dim=64)
# a few words and frames per item, so that a random model's generation stays short
SHORT_SPEECH = dict(speech_generation=dict(do_sample=False, max_new_tokens=4),
                    acoustic_generation=dict(do_sample=False, max_new_tokens=6))

RESULTS = {
    "command": "python -m bench.performance --limit 2",
    "machine": {"cpu": "Some CPU", "cores": 2, "torch": "2.14.1", "gpu": None, "date": "2026-12-07 10:00 UTC",
                "commit": "abc1234"},
    "settings": {"threads": 2, "clock": "wall", "repeats": 3, "limit": 2, "split": "test"},
    "folders": {"model": "models/dualspeechlm", "corpus": "data/corpus", "cache_dir": "data/encoder_cache",
                "whisper": "models/whisper-tiny.en", "ustokenizer": "models/ustokenizer", "codec": "models/mel-codec",
                "speaker_encoder": "models/speaker-encoder"},
    "sections": {
        "asr": {"items": 2, "audio_seconds": 10.0, "baseline": "Whisper tiny.en", "runs": [
            {"system": "DualSpeechLM", "batch_size": 8, "seconds": 0.5, "real_time_factor": 0.05, "wer": 0.02,
             "wer_vs_baseline": 0.2, "speedup_over_baseline": 4.0, "batching_speedup": 2.5},
            {"system": "Whisper tiny.en", "batch_size": 1, "seconds": 3.0, "real_time_factor": 0.3, "wer": 0.0,
             "wer_vs_baseline": None, "speedup_over_baseline": 1.0, "batching_speedup": 1.0}]},
        "tts": {"task": "tts", "speech_generation": {"do_sample": False, "num_beams": 8}, "items": 16,
                "batch_size": 8,
                "runs": {"kv_cache_batched": {"seconds": 2.0, "speech_seconds": 40.0, "real_time_factor": 0.05},
                         "kv_cache_one_by_one": {"seconds": 6.0, "speech_seconds": 40.0, "real_time_factor": 0.15},
                         "no_cache_batched": {"seconds": 8.0, "speech_seconds": 40.0, "real_time_factor": 0.2},
                         "no_cache_one_by_one": {"seconds": 30.0, "speech_seconds": 40.0, "real_time_factor": 0.75}},
                "first_audio_seconds": {"one_item": 0.4, "first_batch": 1.0},
                "kv_cache_speedup": {"batched": 4.0, "one_by_one": 5.0},
                "batching_speedup": {"kv_cache": 3.0, "no_cache": 3.75}},
        "ustokenizer": {"batch_size": 8, "clips": [
            {"seconds": 2.0, "padded_encoder": 3.2, "real_length_encoder": 85.7, "ustokenizer": 76.1,
             "encoder_speedup": 26.8, "ustokenizer_speedup": 23.8, "kept": 0.888}]},
        "codec": {"utterances": 2, "audio_seconds": 10.0, "batch_size": 8, "encode_seconds": 0.1, "vocoders": {
            "neural": {"decode_seconds": 0.1, "encode_rtf": 0.01, "decode_rtf": 0.01, "round_trip_rtf": 0.02},
            "griffin_lim": {"decode_seconds": 0.5, "encode_rtf": 0.01, "decode_rtf": 0.05, "round_trip_rtf": 0.06}}},
        "training": {"matmul_size": 2048, "matmul_peak_flops_per_second": {"fp32": 100e9, "bf16": 20e9}, "steps": {
            "stage 1, batch 16": {"seconds_per_step": 0.25, "steps_per_second": 4.0, "flops_per_step": 5e9,
                                  "flops_per_second": 20e9, "share_of_fp32_peak": 0.2, "share_of_bf16_peak": 1.0}}},
    },
}


def test_page_states_its_command_and_machine_and_gives_each_figure_beside_its_ratio():
    page = performance_page(RESULTS)
    lines = page.splitlines()
    assert lines[0] == "# Performance"
    assert lines[2] == ("Written by `python -m bench.performance --limit 2` on 2026-12-07 10:00 UTC at commit "
                        "`abc1234`; `make performance` runs it on the main job's folders.")
    assert lines[4].startswith("Machine: Some CPU, 2 cores, torch 2.14.1, no GPU; everything runs on the CPU with "
                               "2 thread(s). Each figure is the best of 3 rounds (wall clock)")
    assert [line for line in lines if line.startswith("## ")] == [
        "## Speech recognition (ASR)", "## Text to speech (TTS)", "## USTokenizer", "## Codec", "## Training"]
    assert "| DualSpeechLM | 8 | 2.0% | 0.20x | 0.0500 | 4.0x | 2.5x |" in lines
    assert "| Whisper tiny.en | 1 | 0.0% | n/a | 0.300 | 1.0x | 1.0x |" in lines
    assert "| yes | batches of 8 | 2.00 | 40.0 | 0.0500 | 4.0x | 3.0x |" in lines
    assert "| yes | one by one | 6.00 | 40.0 | 0.150 | 5.0x | 1.0x |" in lines
    assert "| no | batches of 8 | 8.00 | 40.0 | 0.200 | 1.0x | 3.8x |" in lines
    assert "| no | one by one | 30.0 | 40.0 | 0.750 | 1.0x | 1.0x |" in lines
    assert "| one item alone | 0.400 | 1.0x |" in lines and "| a batch of 8 | 1.00 | 2.5x |" in lines
    assert "(do_sample False, num_beams 8)" in page
    assert "| 2 s | 3.2x | 85.7x | 26.8x | 76.1x | 23.8x | 89% |" in lines
    assert "| neural | 0.0100 | 0.0100 | 0.0200 | 1.0x |" in lines
    assert "| griffin_lim | 0.0100 | 0.0500 | 0.0600 | 3.0x |" in lines
    assert "| stage 1, batch 16 | 0.250 | 4.00 | 5.00 | 20.0 | 20.0% | 100.0% |" in lines
    assert "a 2048 x 2048 matrix product at 100 GFLOP/s in fp32 and 20.0 GFLOP/s in bf16" in page
    assert page.endswith("|\n")


def test_asr_speeds_scores_and_times_every_system_at_every_batch_size():
    references = ["anna saw the cat", "the dog sleeps", "who has the red lamp", "seven green birds"]
    clips = [np.full(8000, index, dtype=np.float32) for index in range(4)]  # 0.5 s each, the value names the clip

    def exact(batch, batch_size):
        time.sleep(0.001 * len(batch) / batch_size)
        return [references[int(clip[0])] for clip in batch]

    def sloppy(batch, batch_size):  # one word wrong in every clip
        time.sleep(0.004 * len(batch) / batch_size)
        return [references[int(clip[0])].replace("the", "a").replace("seven", "eleven") for clip in batch]

    speeds = asr_speeds({"exact": exact, "sloppy": sloppy}, clips, references, "sloppy", repeats=2,
                        clock=time.perf_counter, batch_sizes=(1, 2))
    assert speeds["items"] == 4 and speeds["audio_seconds"] == 2.0 and speeds["baseline"] == "sloppy"
    runs = {(run["system"], run["batch_size"]): run for run in speeds["runs"]}
    assert list(runs) == [("exact", 1), ("exact", 2), ("sloppy", 1), ("sloppy", 2)]
    for (system, size), run in runs.items():
        assert run["seconds"] > 0
        assert run["real_time_factor"] == pytest.approx(run["seconds"] / 2.0)
        assert run["wer"] == (0.0 if system == "exact" else 4 / 15)  # 4 of 15 words
        assert run["wer_vs_baseline"] == (0.0 if system == "exact" else 1.0)
        assert run["speedup_over_baseline"] == pytest.approx(runs["sloppy", size]["seconds"] / run["seconds"])
        assert run["batching_speedup"] == pytest.approx(runs[system, 1]["seconds"] / run["seconds"])
    assert runs["exact", 1]["speedup_over_baseline"] > 1  # a quarter of the sleep


def test_speech_generation_speeds_on_a_tiny_random_model():
    model, processor = tiny_random_model_and_processor()
    never_stops(model)
    texts = ["anna saw the cat", "the dog sleeps", "who saw the cat?"]
    voices = torch.randn(len(texts), model.config.speaker_embedding_size)

    def inputs_of(rows):
        batch = processor(task="tts", text=texts[rows.start : rows.stop])
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
                "condition_mask": batch["condition_mask"], "speaker_embeddings": voices[rows.start : rows.stop]}

    speeds = speech_generation_speeds(model, inputs_of, items=3, batch_size=2, repeats=1, clock=time.perf_counter,
                                      output_audio=True, do_sample=False, max_new_tokens=3, acoustic_do_sample=False,
                                      acoustic_max_new_tokens=5)
    assert speeds["items"] == 3 and speeds["batch_size"] == 2 and set(speeds["runs"]) == set(SETTINGS)
    frames_seconds = 3 * 5 / model.config.codec_frame_rate  # every item writes 5 frames
    for run in speeds["runs"].values():
        assert run["seconds"] > 0 and run["speech_seconds"] == pytest.approx(frames_seconds, rel=0.05)
        assert run["real_time_factor"] == pytest.approx(run["seconds"] / run["speech_seconds"])
    runs = speeds["runs"]
    assert speeds["kv_cache_speedup"]["batched"] == pytest.approx(
        runs["no_cache_batched"]["seconds"] / runs["kv_cache_batched"]["seconds"])
    assert speeds["batching_speedup"]["no_cache"] == pytest.approx(
        runs["no_cache_one_by_one"]["seconds"] / runs["no_cache_batched"]["seconds"])
    assert all(seconds > 0 for seconds in speeds["first_audio_seconds"].values())


def test_ustokenizer_speeds_on_a_tiny_random_tokenizer():
    torch.manual_seed(0)
    tokenizer = USTokenizerModel(USTokenizerConfig(encoder_config=TINY_ENCODER, conv_hidden_size=16, codebook_dim=8,
                                                   codebook_size=32, llm_hidden_size=16)).eval()
    speech = np.random.default_rng(0).normal(0, 0.1, 32000).astype(np.float32)
    speeds = ustokenizer_speeds(tokenizer, speech, [0.5, 1.0], batch_size=2, repeats=1, clock=time.perf_counter)
    assert speeds["batch_size"] == 2 and [clip["seconds"] for clip in speeds["clips"]] == [0.5, 1.0]
    for clip in speeds["clips"]:
        assert min(clip["padded_encoder"], clip["real_length_encoder"], clip["ustokenizer"]) > 0
        assert clip["encoder_speedup"] == pytest.approx(clip["real_length_encoder"] / clip["padded_encoder"])
        assert clip["ustokenizer_speedup"] == pytest.approx(clip["ustokenizer"] / clip["padded_encoder"])
        assert clip["kept"] == pytest.approx(clip["ustokenizer_speedup"] / clip["encoder_speedup"])
        assert clip["encoder_speedup"] > 1  # a second of audio against 30 s of padding


def test_codec_speeds_on_a_tiny_random_codec():
    torch.manual_seed(0)
    codec = MelCodecModel(MelCodecConfig(hidden_size=16, latent_size=8, encoder_layers=1, decoder_layers=1,
                                         num_quantizers=2, codebook_size=16, vocoder="griffin_lim",
                                         griffin_lim_iterations=2)).eval()
    waveforms = [0.1 * torch.randn(samples) for samples in (8000, 12000, 16000)]
    speeds = codec_speeds(codec, waveforms, batch_size=2, repeats=1, clock=time.perf_counter)
    assert speeds["utterances"] == 3 and speeds["audio_seconds"] == 2.25 and speeds["batch_size"] == 2
    assert set(speeds["vocoders"]) == {"neural", "griffin_lim"} and codec.config.vocoder == "griffin_lim"
    for vocoder in speeds["vocoders"].values():
        assert vocoder["encode_rtf"] == pytest.approx(speeds["encode_seconds"] / 2.25)
        assert vocoder["decode_rtf"] == pytest.approx(vocoder["decode_seconds"] / 2.25)
        assert vocoder["round_trip_rtf"] == pytest.approx(vocoder["encode_rtf"] + vocoder["decode_rtf"])
        assert vocoder["decode_seconds"] > 0


class Regression(torch.nn.Module):
    """8 -> 16 -> 4, mean squared error: the FLOPs of a step are known by hand."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))

    def forward(self, inputs, targets):
        return SimpleNamespace(loss=torch.nn.functional.mse_loss(self.net(inputs), targets))


def test_training_speeds_count_the_flops_of_a_step_against_the_matmul_peak():
    torch.manual_seed(0)
    model = Regression()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batches = {size: {"inputs": torch.randn(size, 8), "targets": torch.randn(size, 4)} for size in (32, 64)}
    steps = {f"batch {size}": (lambda batch=batch: training_step(model, optimizer, batch))
             for size, batch in batches.items()}
    speeds = training_speeds(steps, {"mix": {"batch 32": 0.25, "batch 64": 0.75}}, repeats=2,
                             clock=time.perf_counter, matmul_size=64)
    # forward 2*B*(8*16 + 16*4); backward: the weight gradients of both layers and the input gradient of the second
    assert speeds["steps"]["batch 32"]["flops_per_step"] == 2 * 32 * (2 * 8 * 16 + 3 * 16 * 4) == 28672
    assert speeds["steps"]["batch 64"]["flops_per_step"] == 2 * 28672
    assert speeds["matmul_size"] == 64 and all(peak > 0 for peak in speeds["matmul_peak_flops_per_second"].values())
    rows = speeds["steps"]
    assert list(rows) == ["batch 32", "batch 64", "mix"]
    assert rows["mix"]["flops_per_step"] == pytest.approx(0.25 * 28672 + 0.75 * 2 * 28672)
    assert rows["mix"]["seconds_per_step"] == pytest.approx(0.25 * rows["batch 32"]["seconds_per_step"]
                                                            + 0.75 * rows["batch 64"]["seconds_per_step"])
    for row in rows.values():
        assert row["seconds_per_step"] > 0 and row["steps_per_second"] == pytest.approx(1 / row["seconds_per_step"])
        assert row["flops_per_second"] == pytest.approx(row["flops_per_step"] / row["seconds_per_step"])
        for dtype in ("fp32", "bf16"):
            peak = speeds["matmul_peak_flops_per_second"][dtype]
            assert row[f"share_of_{dtype}_peak"] == pytest.approx(row["flops_per_second"] / peak)


def test_missing_folders_stop_the_command_with_the_make_targets_that_make_them(tmp_path):
    with pytest.raises(SystemExit) as stopped:
        main(["--sections", "codec", "training", "--corpus", str(tmp_path / "corpus"), "--codec",
              str(tmp_path / "codec"), "--cache-dir", str(tmp_path / "cache"), "--ustokenizer", str(tmp_path / "ust"),
              "--speaker-encoder", str(tmp_path / "spk"), "--output-dir", str(tmp_path / "docs")])
    message = str(stopped.value)
    for option, target in (("--codec", "codec"), ("--corpus", "corpus"), ("--cache-dir", "encoder-cache"),
                           ("--ustokenizer", "ustokenizer"), ("--speaker-encoder", "speaker-encoder")):
        assert f"{option} {tmp_path}" in message and f"(`make {target}` makes it)" in message
    assert message.count("`make") == 5 and not (tmp_path / "docs").exists()


def test_a_model_that_cannot_speak_yet_names_the_make_target(tmp_path):
    model, _ = tiny_random_model_and_processor()
    model.config.acoustic_loss_weight = 0.0  # as the tiny preset trains it: the plain codec needs AcousticGPT
    model.save_pretrained(tmp_path / "model")
    with pytest.raises(NotReadyError, match="`make evaluation`"):
        speaking_model(tmp_path / "model")
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "manifest.json").write_text("{}")
    with pytest.raises(SystemExit, match="`make evaluation`"):  # before any section is measured
        main(["--sections", "asr", "tts", "--model", str(tmp_path / "model"), "--corpus", str(tmp_path / "corpus"),
              "--whisper", str(tmp_path / "model"), "--output-dir", str(tmp_path / "docs")])
    assert not (tmp_path / "docs").exists()


@pytest.fixture(scope="module")
def tiny_folders(tiny_corpus, whisper_dir, tiny_parts, tmp_path_factory):
    """The folders of `make quickstart` in tiny: a random model that always speaks a few frames, a random
    USTokenizer of width 32 with `text_llm/`, the tiny codec and speaker encoder; the tiny corpus and Whisper."""
    folder = tmp_path_factory.mktemp("performance")
    model, processor = tiny_random_model_and_processor()
    model.config.update(SHORT_SPEECH)
    save_for_pipelines(never_stops(model), processor, folder / "model")
    torch.manual_seed(0)
    USTokenizerModel(USTokenizerConfig(encoder_config=TINY_ENCODER, conv_hidden_size=16, codebook_dim=8,
                                       codebook_size=32, llm_hidden_size=32)).save_pretrained(folder / "ust")
    USTokenizerFeatureExtractor().save_pretrained(folder / "ust")
    shutil.copytree(tiny_parts / "text_llm", folder / "ust" / "text_llm")
    (folder / "cache").mkdir()  # the encoder cache, which `make encoder-cache` starts
    return {"--model": folder / "model", "--corpus": tiny_corpus, "--cache-dir": folder / "cache",
            "--whisper": whisper_dir, "--ustokenizer": folder / "ust", "--codec": tiny_parts / "codec",
            "--speaker-encoder": tiny_parts / "speaker_encoder"}


def test_the_command_writes_every_section_on_tiny_folders(tiny_folders, tmp_path, monkeypatch):
    monkeypatch.setattr(performance_training, "MATMUL_SIZE", 128)
    main([*(str(part) for option in tiny_folders.items() for part in option), "--limit", "2", "--repeats", "1",
          "--threads", "1", "--output-dir", str(tmp_path / "docs")])
    results = json.loads((tmp_path / "docs" / "performance.json").read_text())
    assert list(results["sections"]) == ["asr", "tts", "vc", "ustokenizer", "codec", "training"]
    assert results["command"].startswith("python -m bench.performance --model ")
    assert results["machine"]["cores"] >= 1 and results["settings"]["threads"] == 1
    asr = results["sections"]["asr"]
    assert asr["items"] == 2 and [(run["system"], run["batch_size"]) for run in asr["runs"]] == [
        ("DualSpeechLM", 1), ("DualSpeechLM", 8), ("Whisper tiny.en", 1), ("Whisper tiny.en", 8)]
    assert all(run["real_time_factor"] > 0 and 0 <= run["wer"] for run in asr["runs"])
    for task in ("tts", "vc"):
        assert results["sections"][task]["items"] == 2
        assert all(run["speech_seconds"] > 0 for run in results["sections"][task]["runs"].values())
    steps = results["sections"]["training"]["steps"]
    assert next(iter(steps)).startswith("stage 1, batch ") and "stage 3, the preset's task mix" in steps
    assert all(step["flops_per_step"] > 0 for step in steps.values())
    assert results["sections"]["training"]["matmul_size"] == 128
    page = (tmp_path / "docs" / "PERFORMANCE.md").read_text()
    assert page == performance_page(results)
