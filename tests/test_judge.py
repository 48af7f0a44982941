"""The speech judges (Whisper; pocketsphinx, generic and with the corpus' training-sentence language model):
espeak-ng speech, scoring arithmetic and regrouping, input checks, transcript cache, CLI."""

import io
import json
import multiprocessing
import subprocess

import numpy as np
import pytest
import soundfile as sf

from dualspeechlm.training import judge as judge_module
from dualspeechlm.training.judge import (
    PocketsphinxJudge,
    TranscriptCache,
    WhisperJudge,
    build_language_model,
    corpus_language_model,
    default_cache_dir,
    format_markdown_table,
    judge,
    main,
    prepare_waveforms,
    regrouped,
    speech_judges,
    training_sentences,
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
    pooled = PocketsphinxJudge(processes=2, progress=False, cache_dir=False).transcribe(waves[1:] * 2, rate)
    assert pooled == transcripts["pocketsphinx"][1:] * 2


def test_whisper_transcribes_each_audio_once(clips, whisper, transcripts, tmp_path, monkeypatch):
    waves, rate = clips
    monkeypatch.setattr(whisper, "cache", TranscriptCache(tmp_path, whisper.name, whisper.identity))
    decoded, pipe = [], whisper.pipe  # utterances per call of the Whisper pipeline
    monkeypatch.setattr(whisper, "pipe",
                        lambda inputs, **kwargs: decoded.append(len(inputs)) or pipe(inputs, **kwargs))
    assert whisper.transcribe(waves[:2], rate) == transcripts["whisper"][:2] and decoded == [2]
    # Only the noise is new; cached transcripts come back in the order asked for.
    assert whisper.transcribe(waves[::-1], rate) == transcripts["whisper"][::-1] and decoded == [2, 1]
    assert whisper.transcribe(waves, rate) == transcripts["whisper"] and decoded == [2, 1]
    assert len(whisper.cache.path.read_text().splitlines()) == 3
    # A judge whose every transcript is cached never loads the model.
    warm = WhisperJudge(whisper.whisper_dir, progress=False, cache_dir=tmp_path)
    assert warm.transcribe(waves, rate) == transcripts["whisper"] and "pipe" not in vars(warm)


def test_pocketsphinx_cache_is_shared_by_judges_and_can_be_off(clips, transcripts, tmp_path, monkeypatch):
    waves, rate = clips
    decoded, decode = [], judge_module._pocketsphinx_decode
    monkeypatch.setattr(judge_module, "_pocketsphinx_decode",
                        lambda pcm, language_model=None: decoded.append(pcm) or decode(pcm, language_model))
    assert (PocketsphinxJudge(1, progress=False, cache_dir=tmp_path).transcribe(waves, rate)
            == transcripts["pocketsphinx"])
    assert len(decoded) == 3
    # Another judge with the same identity (as in another process) reads the same file.
    again = PocketsphinxJudge(1, progress=False, cache_dir=tmp_path)
    assert again.transcribe(waves, rate) == transcripts["pocketsphinx"]
    assert len(decoded) == 3 and again.cached_in_last_call == 3
    scored = judge(["x"] * 3, waves, rate, judges=[again])["judges"]["pocketsphinx"]
    assert scored["cached"] == 3 and scored["seconds_per_utterance"] is None  # no judge is that fast
    off = PocketsphinxJudge(1, progress=False, cache_dir=False)
    assert off.cache is None and off.transcribe(waves, rate) == transcripts["pocketsphinx"] and len(decoded) == 6


def test_transcript_cache_keys_identities_and_torn_lines(tmp_path):
    wave = np.linspace(-1, 1, 1600, dtype=np.float32)
    nudged = wave.copy()
    nudged[800] += 1e-6
    key, other = TranscriptCache.key(wave), TranscriptCache.key(nudged)
    cache = TranscriptCache(tmp_path, "stub", {"model": "a"})
    cache.put([key], ["hello wörld"])
    assert cache.get([key, other]) == ["hello wörld", None]  # one changed sample is a miss
    assert TranscriptCache(tmp_path, "stub", {"model": "a"}).path == cache.path
    assert TranscriptCache(tmp_path, "stub", {"model": "b"}).get([key]) == [None]  # another judge shares nothing
    assert TranscriptCache(tmp_path, "other", {"model": "a"}).get([key]) == [None]
    # A writer killed mid-write leaves a torn last line: readers skip it. The next line appended is glued to it
    # and lost too (a miss, transcribed again: never a wrong transcript); lines after that are read.
    with open(cache.path, "ab") as file:
        file.write(b'{"audio": "' + other[:7].encode())
    assert cache.get([key, other]) == ["hello wörld", None]
    cache.put([other], ["glued"])
    cache.put([other, "k3"], ["again", "three"])
    assert cache.get([key, other, "k3"]) == ["hello wörld", "again", "three"]


def append_lines(args):
    directory, writer = args
    cache = TranscriptCache(directory, "stub", {})
    for batch in range(20):
        cache.put([f"{writer}-{batch}-{i}" for i in range(50)], ["x" * 300] * 50)


def test_transcript_cache_parallel_writers_never_interleave(tmp_path):
    with multiprocessing.get_context("fork").Pool(2) as pool:
        pool.map(append_lines, [(tmp_path, writer) for writer in range(2)])
    lines = TranscriptCache(tmp_path, "stub", {}).path.read_text().splitlines()
    assert len(lines) == 2000 and all(json.loads(line)["text"] == "x" * 300 for line in lines)


def test_cache_dir_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("DUALSPEECHLM_JUDGE_CACHE", str(tmp_path / "env"))
    assert PocketsphinxJudge(progress=False).cache.path.parent == tmp_path / "env"
    monkeypatch.delenv("DUALSPEECHLM_JUDGE_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / ".cache" / "dualspeechlm" / "judge"


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
    monkeypatch.setattr(judge_module, "WhisperJudge",
                        lambda path, batch_size, cache_dir: loaded.append((path, cache_dir)) or whisper)
    assert main(["--corpus", str(tiny_corpus), "--whisper", str(whisper_dir), "--limit", "1",
                 "--output-dir", str(tmp_path), "--cache-dir", str(tmp_path / "cache")]) == 0
    assert loaded == [(str(whisper_dir), str(tmp_path / "cache"))]
    (pocketsphinx,) = (tmp_path / "cache").glob("pocketsphinx-*.jsonl")
    assert len(pocketsphinx.read_text().splitlines()) == 2  # one utterance of each split
    saved = json.loads((tmp_path / "baseline.json").read_text())
    assert list(saved["splits"]) == ["test", "test_unseen_voice"]
    for split, result in saved["splits"].items():
        assert result["num_utterances"] == 1
        assert set(result["judges"]) == set(result["engines"]) == {"whisper", "pocketsphinx", "pocketsphinx_lm"}
        (voice,) = set(result["groups"])
        (engine,) = set(result["engines"]["whisper"])
        assert engine in ("flite", "festival")
        assert f"| {voice} | 1 |" in (tmp_path / "baseline.md").read_text()
        assert f"| {engine} | 1 |" in (tmp_path / "baseline.md").read_text()
    assert "| all | 1 |" in capsys.readouterr().out
    assert main(["--corpus", str(tiny_corpus), "--judges", "whisper", "--limit", "1", "--no-cache",
                 "--output-dir", str(tmp_path / "off")]) == 0
    assert loaded[-1][1] is False


def arpa_unigrams(path) -> set[str]:
    lines = path.read_text().splitlines()
    start = lines.index("\\1-grams:") + 1
    end = next(i for i in range(start, len(lines)) if not lines[i].strip())
    return {line.split()[1] for line in lines[start:end]} - {"<s>", "</s>", "<unk>"}


def test_pocketsphinx_language_model_is_built_from_training_text_only(tiny_corpus, tmp_path):
    from dualspeechlm.processing.corpus import load_corpus

    sentences = training_sentences(tiny_corpus)
    held_out = set()
    for config, column in (("speech", "text"), ("style", "text"), ("vc", "text"), ("translation", "text"),
                           ("qa", "passage")):
        corpus = load_corpus(tiny_corpus, config)
        for split in ("validation", "test", "test_unseen_voice"):
            held_out |= {part.strip() for text in corpus[split][column] for part in text.split(".") if part.strip()}
    assert sentences and not set(sentences) & held_out
    assert set(load_corpus(tiny_corpus, "speech")["train"]["text"]) <= set(sentences)

    path = corpus_language_model(tiny_corpus, tmp_path)
    assert path.parent == tmp_path and corpus_language_model(tiny_corpus, tmp_path) == path  # cached by content
    assert arpa_unigrams(path) == {word for s in sentences for word in judge_module.normalize_text(s).split()}
    with pytest.raises(ValueError, match="at least one non-empty sentence"):
        build_language_model(["", "  "], tmp_path / "empty.arpa")


def test_pocketsphinx_with_the_corpus_language_model_only_says_training_words(tiny_corpus, tmp_path):
    from dualspeechlm.processing.corpus import corpus_audio

    judges = speech_judges(corpus=tiny_corpus, cache_dir=tmp_path, names=("pocketsphinx", "pocketsphinx_lm"))
    assert set(judges) == {"pocketsphinx", "pocketsphinx_lm"} and judges["pocketsphinx_lm"].name == "pocketsphinx_lm"
    assert judges["pocketsphinx"].identity != judges["pocketsphinx_lm"].identity  # separate transcript caches
    rows = corpus_audio(tiny_corpus, "train", limit=4)
    vocabulary = arpa_unigrams(corpus_language_model(tiny_corpus, tmp_path))
    result = judge(rows["text"], rows["audio"], 16000, judges=judges, groups=rows["speaker"])
    hypotheses = result["judges"]["pocketsphinx_lm"]["hypotheses"]
    assert any(hypotheses) and set(" ".join(hypotheses).split()) <= vocabulary
    # the training sentences constrain the search: it hears them better than the generic model
    assert result["judges"]["pocketsphinx_lm"]["wer"] < result["judges"]["pocketsphinx"]["wer"]
    with pytest.raises(ValueError, match="unknown judges"):
        speech_judges(corpus=tiny_corpus, names=("pocketsphinx", "ears"))


def test_regrouped_scores_the_same_transcripts_by_other_groups():
    class Echo:
        name = "echo"

        def transcribe(self, waveforms, rate):
            return ["a b", "a x", "c d"]

    result = judge(["a b", "a b", "c d"], [np.zeros(1600, np.float32)] * 3, 16000, judges=[Echo()],
                   groups=["v1", "v2", "v3"])
    by_engine = regrouped(result, ["flite", "flite", "festival"])
    scores = by_engine["judges"]["echo"]["groups"]
    assert scores["flite"]["wer"] == pytest.approx(0.25) and scores["festival"]["wer"] == 0
    assert by_engine["judges"]["echo"]["wer"] == result["judges"]["echo"]["wer"]
    with pytest.raises(ValueError, match="2 groups but 3 utterances"):
        regrouped(result, ["a", "b"])
