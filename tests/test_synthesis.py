"""The corpus' speech engines (flite, festival, espeak-ng): a clip of each, its sampling rate and speaking rate,
pitch and whisper, batching, and clear errors for missing engines, voices and settings."""

import numpy as np
import pytest
import torch

from dualspeechlm.processing.corpus import SAMPLING_RATE, EngineNotFoundError, Voice, synthesize, synthesize_many
from dualspeechlm.processing.corpus.synthesis import whispered

from conftest import require_tool

TEXT = "the quiet horse slept behind the old bridge"
VOICES = {
    "flite": Voice("slt", "flite", "slt"),
    "festival": Voice("slt_hts", "festival", "cmu_us_slt_arctic_hts"),
    "espeak-ng": Voice("us", "espeak-ng", "en-us+m1"),
}


@pytest.fixture(scope="module", autouse=True)
def engines():
    for engine, package in (("flite", "flite"), ("festival", "festival"), ("espeak-ng", "espeak-ng")):
        require_tool(engine, package)


def median_pitch(samples, frame=640):
    """Median F0 (Hz) of the loudest frames, by autocorrelation peak between 50 and 500 Hz."""
    frames = samples[: len(samples) // frame * frame].reshape(-1, frame)
    loud = frames[frames.std(axis=1) > 0.5 * frames.std(axis=1).max()]
    lags = np.arange(SAMPLING_RATE // 500, SAMPLING_RATE // 50)
    pitches = []
    for f in loud - loud.mean(axis=1, keepdims=True):
        correlation = np.correlate(f, f, mode="full")[frame - 1:]
        pitches.append(SAMPLING_RATE / lags[np.argmax(correlation[lags])])
    return float(np.median(pitches))


def periodicity(samples, frame=640):
    """Mean normalized autocorrelation peak (lags of 2-20 ms) of the loudest frames: near 1 for voiced speech,
    low for noise."""
    frames = samples[: len(samples) // frame * frame].reshape(-1, frame)
    loud = frames[frames.std(axis=1) > 0.5 * frames.std(axis=1).max()]
    peaks = []
    for f in loud - loud.mean(axis=1, keepdims=True):
        correlation = np.correlate(f, f, mode="full")[frame - 1:]
        peaks.append(correlation[32:320].max() / correlation[0])
    return float(np.mean(peaks))


@pytest.mark.parametrize("engine", sorted(VOICES))
def test_each_engine_speaks_16khz_mono_and_follows_the_rate(engine):
    voice = VOICES[engine]
    normal, fast = synthesize_many([(TEXT, voice), (TEXT, voice.with_style(rate=1.5))], workers=2, progress=False)
    for audio in (normal, fast):
        assert audio.dtype == np.float32 and audio.ndim == 1
        assert 0.05 < np.abs(audio).max() <= 1.0
    # the text takes 2-4 s at a normal rate: 16 kHz output, not the engine's own rate (festival's HTS: 32 kHz)
    assert 2 * SAMPLING_RATE < len(normal) < 4 * SAMPLING_RATE, len(normal)
    assert len(fast) < 0.8 * len(normal)


# flite sets the mean F0 itself; espeak-ng's pitch parameter moves F0 less than in proportion
@pytest.mark.parametrize("engine, step", [("flite", 1.2), ("espeak-ng", 1.1)])
def test_pitch_follows_the_voice_setting(engine, step):
    voice = VOICES[engine]
    normal, high, low = (synthesize(TEXT, voice.with_style(pitch=p)) for p in (1.0, 1.5, 0.6))
    assert median_pitch(high) > step * median_pitch(normal) > step * step * median_pitch(low)


def test_whisper_removes_the_voicing_and_keeps_the_length():
    voice = VOICES["flite"]
    normal, whisper = synthesize(TEXT, voice), synthesize(TEXT, voice.with_style(whisper=True))
    assert len(whisper) == len(normal)
    assert periodicity(normal) > 0.6 > 0.4 > periodicity(whisper), (periodicity(normal), periodicity(whisper))
    assert np.sqrt(np.mean(whisper ** 2)) < 0.5 * np.sqrt(np.mean(normal ** 2))
    waveform = torch.from_numpy(normal)
    assert torch.equal(whispered(waveform), whispered(waveform))  # the same clip whispers the same way


def test_a_whisper_is_the_same_whatever_the_thread_count():
    """The corpus is the same bytes on every machine: no float sum in the whisper may depend on torch's threads."""
    clips = [torch.from_numpy(np.random.default_rng(length).standard_normal(length).astype(np.float32) / 10)
             for length in range(48_000, 48_012)]  # torch's parallel mean rounds differently on some of these
    threads = torch.get_num_threads()
    try:
        whispers = {}
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            whispers[count] = [whispered(clip) for clip in clips]
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(one, other) for count in (2, 3) for one, other in zip(whispers[1], whispers[count]))


def test_batches_keep_the_order_of_the_jobs():
    texts = ["anna saw the red cat", "the dog ran", "please open the door"]
    jobs = [(text, VOICES[engine]) for text in texts for engine in ("festival", "flite")]
    batched = synthesize_many(jobs, workers=2, progress=False, chunk=2)
    for (text, voice), audio in zip(jobs, batched):
        assert np.array_equal(audio, synthesize(text, voice))


@pytest.mark.parametrize("engine, package", [("flite", "flite"), ("festival", "festival"), ("espeak-ng", "espeak-ng")])
def test_a_missing_engine_names_its_package(engine, package, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(EngineNotFoundError, match=f"apt-get install {package}"):
        synthesize("hello", VOICES[engine])


def test_bad_voices_and_text_are_clear_errors():
    with pytest.raises(ValueError, match="flite has no voice 'nobody'"):
        synthesize("hello", Voice("bad", "flite", "nobody"))
    with pytest.raises(ValueError, match="festival has no voice 'nobody'"):
        synthesize("hello", Voice("bad", "festival", "nobody"))
    with pytest.raises(ValueError, match="flite's 'rms'.*use pitch 1"):  # flite ignores an F0 target for rms
        synthesize("hello", Voice("bad", "flite", "rms", pitch=1.3))
    with pytest.raises(ValueError, match="festival voices speak at their own pitch"):
        synthesize("hello", VOICES["festival"].with_style(pitch=1.2))
    with pytest.raises(ValueError, match="no language voice 'xx-nowhere'"):
        synthesize("hello", Voice("bad", "espeak-ng", "xx-nowhere+m1"))
    with pytest.raises(ValueError, match="no variant 'nobody'"):
        synthesize("hello", Voice("bad", "espeak-ng", "en-us+nobody"))
    with pytest.raises(ValueError, match="rate must be in"):
        synthesize("hello", VOICES["flite"].with_style(rate=40))
    with pytest.raises(ValueError, match="unknown speech engine 'sapi'"):
        synthesize("hello", Voice("bad", "sapi", "david"))
    with pytest.raises(ValueError, match="empty text"):
        synthesize("   ", VOICES["flite"])
