"""Tests for dualspeechlm.processing.hub_datasets on small local datasets (no Hub access needed)."""

import io
import time

import datasets
import huggingface_hub.constants
import numpy as np
import pytest
import soundfile as sf
from datasets import Audio, Dataset, Features, IterableDataset, Value

from dualspeechlm.processing.hub_datasets import (
    LAYOUTS,
    SPEECH_COLUMNS,
    HubUnavailableError,
    SpeechLayout,
    load_speech_dataset,
)

# (source rate, seconds, sine frequency) per row; 16 kHz output length is ceil(seconds * 16000)
ROWS = [(22050, 0.50, 300.0), (24000, 0.75, 500.0), (22050, 1.00, 700.0), (24000, 0.60, 900.0)]


def wav_bytes(rate, seconds, freqs, fmt="WAV"):
    """PCM-16 audio with one sine per channel (amplitude 0.5)."""
    t = np.arange(int(round(rate * seconds))) / rate
    data = np.stack([0.5 * np.sin(2 * np.pi * f * t) for f in freqs], axis=1)
    buf = io.BytesIO()
    sf.write(buf, data.astype(np.float32), rate, format=fmt, subtype="PCM_16")
    return buf.getvalue()


def decode(audio):
    """A datasets-5 audio value (torchcodec AudioDecoder) -> (float array [channels, samples], rate)."""
    samples = audio.get_all_samples()
    return samples.data.numpy(), samples.sample_rate


def spectrum_peaks(x, rate, count=1):
    spec = np.abs(np.fft.rfft(x, n=8 * len(x)))
    freqs = np.fft.rfftfreq(8 * len(x), 1 / rate)
    peaks = []
    for _ in range(count):
        i = int(np.argmax(spec))
        peaks.append(freqs[i])
        spec[max(0, i - 400) : i + 400] = 0
    return sorted(peaks)


def check_rows(ds, expected_text, expected_speakers):
    assert ds.column_names == list(SPEECH_COLUMNS)
    assert ds.features["audio"] == Audio(sampling_rate=16000, num_channels=1)
    rows = list(ds)
    assert [r["text"] for r in rows] == expected_text
    assert [r["speaker"] for r in rows] == expected_speakers
    assert all(r["language"] == "en" and isinstance(r["id"], str) for r in rows)
    for row, (rate, seconds, freq) in zip(rows, ROWS):
        x, sr = decode(row["audio"])
        assert sr == 16000 and x.shape[0] == 1
        assert abs(x.shape[1] - seconds * 16000) <= 1.5
        assert abs(spectrum_peaks(x[0], sr)[0] - freq) < 2.0
        assert 0.45 < np.abs(x).max() < 0.55
    return rows


@pytest.fixture(scope="module")
def librispeech_dir(tmp_path_factory):
    """Parquet folder shaped like openslr/librispeech_asr (audio embedded as FLAC bytes)."""
    root = tmp_path_factory.mktemp("librispeech")
    (root / "data").mkdir()
    ids = [f"84-121123-{i:04d}" for i in range(len(ROWS))]
    table = {
        "file": [f"{i}.flac" for i in ids],
        "audio": [{"bytes": wav_bytes(r, s, [f], "FLAC"), "path": f"{i}.flac"} for i, (r, s, f) in zip(ids, ROWS)],
        "text": ["  HELLO WORLD", "GO NORTH", "MISTER QUILTER", "THE END  "],
        "speaker_id": [84, 84, 1272, 1272],
        "chapter_id": [121123] * len(ROWS),
        "id": ids,
    }
    features = Features(
        {"file": Value("string"), "audio": Audio(), "text": Value("string"), "speaker_id": Value("int64"),
         "chapter_id": Value("int64"), "id": Value("string")}
    )
    Dataset.from_dict(table, features=features).to_parquet(str(root / "data" / "train-00000-of-00001.parquet"))
    return root


@pytest.fixture(scope="module")
def libritts_dir(tmp_path_factory):
    """audiofolder (wav files + metadata.csv) with mythicinfinity/libritts's columns."""
    root = tmp_path_factory.mktemp("libritts")
    lines = ["file_name,text_normalized,text_original,speaker_id,path,chapter_id,id"]
    for k, (rate, seconds, freq) in enumerate(ROWS):
        utt = f"{19 + k}_198_000000_00000{k}"
        (root / f"{utt}.wav").write_bytes(wav_bytes(rate, seconds, [freq]))
        lines.append(f'{utt}.wav,Norm {k} text.,"Orig, {k}!",{19 + k},{utt}.wav,198,{utt}')
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    return root


def test_librispeech_layout(librispeech_dir, tmp_path):
    ds = load_speech_dataset(str(librispeech_dir), "librispeech", split="train", cache_dir=str(tmp_path))
    assert isinstance(ds, Dataset) and len(ds) == len(ROWS)
    rows = check_rows(ds, ["hello world", "go north", "mister quilter", "the end"], ["84", "84", "1272", "1272"])
    assert rows[2]["id"] == "84-121123-0002"
    # columns were swapped in Arrow: the audio was not rewritten into a second cache file
    assert len(list(tmp_path.rglob("*.arrow"))) == 1
    # without split: a DatasetDict whose splits all follow the schema
    dd = load_speech_dataset(str(librispeech_dir), LAYOUTS["librispeech"], cache_dir=str(tmp_path))
    assert list(dd) == ["train"] and dd["train"].column_names == list(SPEECH_COLUMNS)


def test_librispeech_layout_streaming(librispeech_dir):
    ds = load_speech_dataset(str(librispeech_dir), "librispeech", split="train", streaming=True)
    assert isinstance(ds, IterableDataset)
    check_rows(ds, ["hello world", "go north", "mister quilter", "the end"], ["84", "84", "1272", "1272"])


def test_libritts_layout(libritts_dir, tmp_path):
    ds = load_speech_dataset(str(libritts_dir), "libritts", split="train", cache_dir=str(tmp_path))
    rows = check_rows(ds, [f"Norm {k} text." for k in range(4)], ["19", "20", "21", "22"])
    assert rows[0]["id"] == "19_198_000000_000000"
    # a custom layout: original text, synthesised ids, other language
    custom = SpeechLayout(text="text_original", id=None, language="fr")
    ds = load_speech_dataset(str(libritts_dir), custom, split="train", cache_dir=str(tmp_path))
    assert ds.column_names == list(SPEECH_COLUMNS)
    assert ds["id"] == [f"train-{k:06d}" for k in range(4)]
    assert ds["text"] == [f"Orig, {k}!" for k in range(4)] and set(ds["language"]) == {"fr"}


def test_stereo_source_is_downmixed(tmp_path):
    """Stereo 440 Hz left / 1000 Hz right at 0.5 -> mono with both tones at 0.5/sqrt(2) (ffmpeg's mix)."""
    wav = tmp_path / "stereo.wav"
    wav.write_bytes(wav_bytes(22050, 0.5, [440.0, 1000.0]))
    src = Dataset.from_dict({"audio": [str(wav)], "text": ["STEREO"], "speaker_id": [7], "id": ["s0"]})
    src.cast_column("audio", Audio()).save_to_disk(str(tmp_path / "saved"))
    ds = load_speech_dataset(str(tmp_path / "saved"), "librispeech")
    x, sr = decode(ds[0]["audio"])
    assert x.shape == (1, 8000) and sr == 16000 and ds[0]["speaker"] == "7"
    assert [round(f) for f in spectrum_peaks(x[0], sr, count=2)] == [440, 1000]
    for f in (440.0, 1000.0):  # amplitude of each tone, by projection on the sine/cosine pair
        t = np.arange(x.shape[1]) / sr
        amp = 2 * np.hypot(x[0] @ np.sin(2 * np.pi * f * t), x[0] @ np.cos(2 * np.pi * f * t)) / x.shape[1]
        assert abs(amp - 0.5 / np.sqrt(2)) < 0.01
    kept = load_speech_dataset(str(tmp_path / "saved"), "librispeech", mono=False)
    assert kept.features["audio"] == Audio(sampling_rate=16000)
    assert decode(kept[0]["audio"])[0].shape == (2, 8000)


def test_missing_columns(libritts_dir, tmp_path):
    with pytest.raises(ValueError, match=r"\['text'\].*text_normalized"):
        load_speech_dataset(str(libritts_dir), "librispeech", split="train", cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="utt_id"):
        load_speech_dataset(str(libritts_dir), SpeechLayout(text="text_normalized", id="utt_id"), split="train",
                            cache_dir=str(tmp_path))


def test_missing_local_path(tmp_path):
    for path in (str(tmp_path / "nope"), "./no/such/folder"):
        with pytest.raises(FileNotFoundError, match="No local dataset") as info:
            load_speech_dataset(path)
        assert not isinstance(info.value, HubUnavailableError)


def test_offline_hub_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    start = time.monotonic()
    with pytest.raises(HubUnavailableError) as info:
        load_speech_dataset("openslr/librispeech_asr", "librispeech", split="validation.clean")
    assert time.monotonic() - start < 30
    message = str(info.value)
    assert isinstance(info.value, ConnectionError)
    for part in ("openslr/librispeech_asr", "offline mode", "save_to_disk", "local path"):
        assert part in message


def test_unreachable_hub_fails_fast(monkeypatch):
    """Not in offline mode, but the endpoint refuses connections: no retry loop, a clear error."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_ENDPOINT", "http://127.0.0.1:9")
    start = time.monotonic()
    with pytest.raises(HubUnavailableError, match="mythicinfinity/libritts.*network unreachable"):
        load_speech_dataset("mythicinfinity/libritts", "libritts", split="dev.clean")
    assert time.monotonic() - start < 30
