import json

import numpy as np
import pytest
import torch
from transformers import AutoFeatureExtractor, WhisperFeatureExtractor

from dualspeechlm.feature_extraction_ustokenizer import USTokenizerFeatureExtractor


def noise(seconds: float, rate: int = 16000, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.1, int(round(seconds * rate))).astype(np.float32)


@pytest.fixture(scope="module")
def extractor():
    return USTokenizerFeatureExtractor()


def test_real_length_batch_and_attention_mask(extractor):
    clips = [noise(2.0), noise(0.77, seed=1), noise(1.234, seed=2)]
    batch = extractor(clips, sampling_rate=16000, return_tensors="pt")
    assert batch.input_features.shape == (3, 80, 200) and batch.input_features.dtype == torch.float32
    assert batch.attention_mask.sum(-1).tolist() == [len(c) // 160 for c in clips] == [200, 77, 123]
    for index, clip in enumerate(clips):
        single = extractor(clip, sampling_rate=16000).input_features[0]
        frames = single.shape[-1]
        assert np.array_equal(batch.input_features[index, :, :frames].numpy(), single)
        assert (batch.input_features[index, :, frames:] == extractor.padding_value).all()


def test_same_mel_as_whisper_except_at_the_clip_end(extractor):
    """Whisper pads to 30 s before its STFT, so only the last two frames (whose windows reach past the
    end: reflection here, zeros there) differ."""
    clip = noise(1.5)
    ours = extractor(clip, sampling_rate=16000).input_features[0]
    whisper = WhisperFeatureExtractor()(clip, sampling_rate=16000).input_features[0][:, : ours.shape[-1]]
    assert ours.shape == (80, 150)
    assert np.abs(ours[:, :-2] - whisper[:, :-2]).max() < 1e-5


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_any_sampling_rate_is_resampled_to_16k(extractor, rate):
    expected = extractor(noise(3.0), sampling_rate=16000).attention_mask.sum()
    assert extractor(noise(3.0, rate), sampling_rate=rate).attention_mask.sum() == expected == 300


def test_input_types(extractor):
    clip = noise(0.5)
    expected = extractor(clip, sampling_rate=16000).input_features
    for same in (torch.from_numpy(clip), clip.tolist(), clip[None], clip[:, None], clip.astype(np.float64)):
        assert np.allclose(extractor(same, sampling_rate=16000).input_features, expected, atol=1e-6)
    both = extractor([torch.from_numpy(clip), clip.tolist()], sampling_rate=16000).input_features
    assert np.allclose(both, np.concatenate([expected, expected]), atol=1e-6)


@pytest.mark.parametrize("audio, kwargs, message", [
    (noise(1.0), {"sampling_rate": None}, "sampling_rate is required"),
    ([], {}, "no audio"),
    (np.zeros(0, np.float32), {}, "is empty"),
    (np.where(np.arange(16000) == 5, np.nan, noise(1.0)).astype(np.float32), {}, "NaN or infinite"),
    (np.where(np.arange(16000) == 5, np.inf, noise(1.0)).astype(np.float32), {}, "NaN or infinite"),
    (np.stack([noise(1.0), noise(1.0, seed=1)]), {}, r"shape \(2, 16000\): only mono"),
    (np.stack([noise(1.0), noise(1.0, seed=1)], axis=1), {}, r"shape \(16000, 2\): only mono"),
    ([noise(1.0), np.zeros((2, 8000), np.float32)], {}, "audio item 1 has shape"),
    ((noise(1.0) * 32768).astype(np.int16), {}, "float samples"),
    (noise(0.05), {}, "shorter than min_duration_s=0.1"),
    (noise(30.5, 8000), {"sampling_rate": 8000}, r"longer than max_duration_s=30.0 s .*3000 mel frames.*chunks"),
])
def test_bad_audio_is_a_clear_error(extractor, audio, kwargs, message):
    with pytest.raises(ValueError, match=message):
        extractor(audio, **{"sampling_rate": 16000, **kwargs})


def test_exactly_30_s_is_accepted(extractor):
    assert extractor(noise(30.0), sampling_rate=16000).attention_mask.sum() == 3000


def test_save_load_without_mel_matrix(extractor, tmp_path):
    custom = USTokenizerFeatureExtractor(max_duration_s=20.0, min_duration_s=0.2)
    custom.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert "mel_filters" not in saved and saved["max_duration_s"] == 20.0
    assert saved["auto_map"]["AutoFeatureExtractor"] == "feature_extraction_ustokenizer.USTokenizerFeatureExtractor"
    loaded = AutoFeatureExtractor.from_pretrained(tmp_path)
    assert type(loaded) is USTokenizerFeatureExtractor and loaded.min_duration_s == 0.2
    assert np.array_equal(loaded.mel_filters, extractor.mel_filters)
    clip = noise(1.0)
    assert np.array_equal(loaded(clip, sampling_rate=16000).input_features,
                          extractor(clip, sampling_rate=16000).input_features)
