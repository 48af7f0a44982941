"""The speech judge: both ASR judges on espeak-ng speech, scoring arithmetic, input checks, CLI."""

import io
import json
import subprocess

import numpy as np
import pytest
import soundfile as sf

from dualspeechlm.training import judge as judge_module
from dualspeechlm.training.judge import (
    PocketsphinxJudge, WhisperJudge, format_markdown_table, judge, main, prepare_waveforms,
)
from dualspeechlm.training.metrics import char_error_rate, word_error_rate

SENTENCE = "the old man sat near the river"


@pytest.fixture(scope="module")
def clips(espeak):
    """[the sentence, 1 s of silence, 1 s of white noise] at espeak-ng's 22050 Hz (judges resample)."""
    wav = subprocess.run(["espeak-ng", "-v", "en-us", "-s", "160", "--stdout", SENTENCE],
                         capture_output=True, check=True).stdout
    speech, rate = sf.read(io.BytesIO(wav), dtype="float32")
    assert rate == 22050
    noise = np.random.default_rng(0).normal(0.0, 0.1, rate).astype(np.float32)
    return [speech, np.zeros(rate, np.float32), noise], rate


@pytest.fixture(scope="module")
def whisper(whisper_dir):
    return WhisperJudge(whisper_dir, batch_size=4, progress=False)


@pytest.fixture(scope="module")
def transcripts(clips, whisper):
    """Each judge's transcripts of the three clips (pocketsphinx in-process: 3 clips < 2 x 2)."""
    waves, rate = clips
    return {"whisper": whisper.transcribe(waves, rate),
            "pocketsphinx": PocketsphinxJudge(progress=False).transcribe(waves, rate)}


def test_whisper_understands_clear_speech(transcripts):
    # Measured: "The old man sat near the river." -> WER 0. The bound allows one wrong word of 7.
    hypothesis = transcripts["whisper"][0]
    assert word_error_rate([SENTENCE], [hypothesis]) <= 0.15, hypothesis


def test_pocketsphinx_is_weaker_but_hears_something(transcripts):
    # Measured: "oh and the relay" -> WER 0.857, CER 0.667 (pocketsphinx is poor on formant
    # synthesis). Silence / noise score CER >= 0.97, so CER <= 0.8 still separates speech from
    # non-speech with margin; WER < 0.95 requires at least one word right.
    hypothesis = transcripts["pocketsphinx"][0]
    assert word_error_rate([SENTENCE], [hypothesis]) < 0.95, hypothesis
    assert char_error_rate([SENTENCE], [hypothesis]) <= 0.8, hypothesis


@pytest.mark.parametrize("name", ["whisper", "pocketsphinx"])
def test_silence_and_noise_score_badly(transcripts, name):
    # Measured: whisper "you" / "you", pocketsphinx "dog" / "": WER 1.0 each.
    for hypothesis in transcripts[name][1:]:
        assert word_error_rate([SENTENCE], [hypothesis]) >= 0.9, hypothesis


def test_pocketsphinx_worker_pool_matches_in_process(clips, transcripts):
    # Two workers decoding silence and noise after other audio: transcripts come back in order and
    # do not depend on what a decoder saw before (without the per-utterance reinit, silence gave
    # "dog" on a fresh decoder but "in" after the sentence).
    waves, rate = clips
    pooled = PocketsphinxJudge(processes=2, progress=False).transcribe(waves[1:] * 2, rate)
    assert pooled == transcripts["pocketsphinx"][1:] * 2


class StubJudge:
    """Returns fixed transcripts, in order: for hand-checkable scoring arithmetic."""

    def __init__(self, name, hypotheses):
        self.name, self.hypotheses = name, hypotheses

    def transcribe(self, waveforms, sampling_rate):
        assert len(waveforms) == len(self.hypotheses) and sampling_rate == 16000
        return list(self.hypotheses)


def test_judge_scores_each_group():
    references = ["the cat sat", "red hat", "a dog ran home"]
    hypotheses = ["the cat sit", "red", "a dog ran home now"]
    waves = [np.full(800, 0.1 * (i + 1), np.float32) for i in range(3)]
    result = judge(references, waves, 8000, judges=[StubJudge("stub", hypotheses), StubJudge("echo", references)],
                   groups=["x", "y", "x"])
    stub = result["judges"]["stub"]
    assert stub["hypotheses"] == hypotheses
    # x: 1 substitution + 1 insertion over 3 + 4 words; 1 + 4 (" now") characters over 11 + 14.
    assert stub["groups"]["x"] == {"num_utterances": 2, "wer": pytest.approx(2 / 7), "cer": pytest.approx(5 / 25)}
    # y: 1 deleted word of 2; " hat" = 4 deleted characters of 7.
    assert stub["groups"]["y"] == {"num_utterances": 1, "wer": pytest.approx(1 / 2), "cer": pytest.approx(4 / 7)}
    assert (stub["wer"], stub["cer"]) == (pytest.approx(3 / 9), pytest.approx(9 / 32))
    assert result["judges"]["echo"]["wer"] == 0.0
    assert result["groups"] == ["x", "y", "x"] and result["num_utterances"] == 3

    table = format_markdown_table(result)
    lines = table.splitlines()
    assert lines[0] == "| group | utterances | stub WER | stub CER | echo WER | echo CER |"
    assert lines[2].startswith("| x | 2 | 28.6% | 20.0% | 0.0% | 0.0% |")
    assert lines[3].startswith("| y | 1 | 50.0% | 57.1% |")
    assert lines[4].startswith("| all | 3 | 33.3% | 28.1% |")

    ungrouped = judge(references, waves, 8000, judges={"stub": StubJudge("stub", hypotheses)})
    assert ungrouped["judges"]["stub"]["groups"] == {}
    assert format_markdown_table(ungrouped).splitlines()[2].startswith("| all | 3 | 33.3% |")


@pytest.mark.parametrize("waveforms, rate, message", [
    ([np.zeros(0, np.float32)], 16000, "waveform 0 is empty"),
    ([np.ones(10), np.array([0.0, np.nan])], 16000, "waveform 1 contains NaN or inf"),
    ([np.array([0.0, np.inf])], 16000, "contains NaN or inf"),
    ([np.zeros((2, 100), np.float32)], 16000, r"shape \(2, 100\): expected a 1-D mono array"),
    ([np.zeros(100, np.float32)], 0, "sampling_rate must be a positive integer"),
    ([np.zeros(100, np.float32)], -16000, "sampling_rate must be a positive integer"),
    (np.zeros((1, 100), np.float32), 16000, "must be a list of 1-D arrays"),
    ([np.array(["a", "b"])], 16000, "expected float or integer PCM"),
])
def test_bad_input_is_rejected_by_every_judge(whisper, waveforms, rate, message):
    for check in (lambda: prepare_waveforms(waveforms, rate), lambda: whisper.transcribe(waveforms, rate),
                  lambda: PocketsphinxJudge(progress=False).transcribe(waveforms, rate)):
        with pytest.raises(ValueError, match=message):
            check()


def test_prepare_waveforms_resamples_and_scales_pcm():
    waves = prepare_waveforms([np.zeros(22050, np.float32), np.full(8000, 16384, np.int16)], 22050)
    assert [w.shape for w in waves] == [(16000,), (5805,)] and waves[0].dtype == np.float32
    assert prepare_waveforms([np.full(4, 16384, np.int16)], 16000)[0] == pytest.approx(np.full(4, 0.5))


def test_judge_rejects_mismatched_lengths():
    stub = StubJudge("stub", ["a"])
    with pytest.raises(ValueError, match="2 references but 1 waveforms"):
        judge(["a", "b"], [np.zeros(10)], 16000, judges=[stub])
    with pytest.raises(ValueError, match="1 groups but 2 references"):
        judge(["a", "b"], [np.zeros(10)] * 2, 16000, judges=[stub], groups=["x"])


def test_cli_writes_baseline(tiny_corpus, whisper_dir, whisper, tmp_path, capsys, monkeypatch):
    loaded = []  # reuse the module's Whisper instead of loading the model a second time
    monkeypatch.setattr(judge_module, "WhisperJudge", lambda path, batch_size: loaded.append(path) or whisper)
    assert main(["--corpus", str(tiny_corpus), "--whisper", str(whisper_dir), "--limit", "1",
                 "--output-dir", str(tmp_path)]) == 0
    assert loaded == [str(whisper_dir)]
    saved = json.loads((tmp_path / "baseline.json").read_text())
    assert list(saved["splits"]) == ["test", "test_unseen_voice"]
    for split, result in saved["splits"].items():
        assert result["num_utterances"] == 1 and set(result["judges"]) == {"whisper", "pocketsphinx"}
        (voice,) = set(result["groups"])
        assert f"| {voice} | 1 |" in (tmp_path / "baseline.md").read_text()
    assert "| all | 1 |" in capsys.readouterr().out
