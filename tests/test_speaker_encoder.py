"""The 512-d speaker encoder: shapes, padding invariance, save/load, input checks, and a tiny
training run on espeak-ng voices (fails, never skips, without espeak-ng)."""

import ast
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModel

import dualspeechlm.speaker_encoder as speaker_encoder_module
from dualspeechlm.speaker_encoder import (
    SpeakerEncoderConfig,
    SpeakerEncoderModel,
    SpeakerEncoderOutput,
    speaker_similarity,
)

# A small network keeps the tests fast; the embedding keeps the paper's 512 dimensions.
TINY = dict(num_mel_bins=32, hidden_size=32, stats_size=48, attention_size=16)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return SpeakerEncoderModel(SpeakerEncoderConfig(**TINY)).eval()


def _clips(lengths, seed=0):
    generator = torch.Generator().manual_seed(seed)
    t = torch.arange(max(lengths)) / 16000
    return [(0.3 * torch.sin(2 * torch.pi * (120 + 40 * i) * t[:n]) + 0.05 * torch.randn(n, generator=generator))
            for i, n in enumerate(lengths)]


def test_config_numbers_and_model_type():
    config = SpeakerEncoderConfig()
    assert config.model_type == "dualspeechlm_speaker_encoder"
    assert config.sampling_rate == 16000 and config.embedding_size == 512
    assert config.to_dict()["num_mel_bins"] == config.num_mel_bins
    assert AutoConfig.for_model("dualspeechlm_speaker_encoder").__class__ is SpeakerEncoderConfig
    with pytest.raises(ValueError, match="same"):
        SpeakerEncoderConfig(conv_kernel_sizes=(3, 3), conv_dilations=(1,), conv_strides=(1, 1))
    with pytest.raises(ValueError, match="odd"):
        SpeakerEncoderConfig(conv_kernel_sizes=(4, 3, 3, 3))
    with pytest.raises(ValueError, match="feature_normalization"):
        SpeakerEncoderConfig(feature_normalization="z")
    with pytest.raises(ValueError, match="f_max"):
        SpeakerEncoderConfig(f_max=9000.0)


def test_model_file_is_self_contained():
    """Model folders load with trust_remote_code from their own copy of this file."""
    tree = ast.parse(Path(speaker_encoder_module.__file__).read_text())
    modules = {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    modules |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert not any(m.startswith(("dualspeechlm", ".")) or m == "" for m in modules), modules


def test_shapes_and_unit_norm(model):
    waves = torch.stack(_clips([16000, 16000, 16000]))
    with torch.no_grad():
        output = model(waves)
        single = model(waves[0]).embeddings
        channel = model(waves[:, None, :]).embeddings
        as_tuple = model(waves, return_dict=False)
    assert isinstance(output, SpeakerEncoderOutput)
    assert output.embeddings.shape == (3, 512)
    assert torch.allclose(output.embeddings.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert output.frame_lengths.tolist() == [(1 + (16000 - 512) // 160 + 1) // 2] * 3
    assert single.shape == (1, 512) and torch.allclose(single, output.embeddings[:1], atol=1e-6)
    assert torch.allclose(channel, output.embeddings, atol=1e-6)
    assert torch.equal(as_tuple[0], output.embeddings)
    assert model.embed([w.numpy() for w in waves]).shape == (3, 512)
    assert model.embed(waves[0]).shape == (1, 512)


def test_batched_equals_one_by_one(model):
    clips = _clips([16000, 9001, 20000, 512, 4321, 777])
    with torch.no_grad():
        alone = torch.cat([model(clip).embeddings for clip in clips])
        batched = model.embed(clips, batch_size=4)
        # padding filled with loud garbage instead of zeros must not matter either
        lengths = torch.tensor([len(c) for c in clips])
        padded = torch.randn(len(clips), int(lengths.max()))
        for i, clip in enumerate(clips):
            padded[i, : len(clip)] = clip
        garbage = model(padded, lengths=lengths).embeddings
        mask = (torch.arange(padded.shape[1])[None] < lengths[:, None]).long()
        masked = model(padded, attention_mask=mask).embeddings
    assert torch.allclose(batched, alone, atol=1e-5), (batched - alone).abs().max()
    assert torch.allclose(garbage, alone, atol=1e-5), (garbage - alone).abs().max()
    assert torch.allclose(masked, alone, atol=1e-5)


def test_recording_level_does_not_matter(model):
    clips = _clips([16000, 9000], seed=2)
    with torch.no_grad():
        loud, quiet = model.embed(clips), model.embed([0.25 * clip for clip in clips])
    assert speaker_similarity(loud, quiet).min() > 0.999


def test_save_and_load_give_identical_embeddings(model, tmp_path):
    clips = _clips([12000, 7000], seed=1)
    with torch.no_grad():
        expected = model.embed(clips)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "dualspeechlm_speaker_encoder" and config["embedding_size"] == 512
    assert config["auto_map"] == {"AutoConfig": "speaker_encoder.SpeakerEncoderConfig",
                                  "AutoModel": "speaker_encoder.SpeakerEncoderModel"}
    assert (tmp_path / "speaker_encoder.py").is_file()  # the code travels with the weights

    loaded = {
        "from_pretrained": SpeakerEncoderModel.from_pretrained(tmp_path),
        "AutoModel": AutoModel.from_pretrained(tmp_path),
        "AutoModel remote code": AutoModel.from_pretrained(tmp_path, trust_remote_code=True),
    }
    for how, other in loaded.items():
        assert other.config.embedding_size == 512, how
        assert not other.training, how
        with torch.no_grad():
            assert torch.equal(other.embed(clips), expected), how
    # loading the folder's own copy of the code does not take the model type over
    assert AutoConfig.for_model("dualspeechlm_speaker_encoder").__class__ is SpeakerEncoderConfig
    assert type(AutoModel.from_pretrained(tmp_path)) is SpeakerEncoderModel


def test_bad_inputs_raise_clear_errors(model):
    wave = _clips([8000])[0]
    cases = [
        (torch.zeros(0), "empty"),
        (torch.zeros(2, 0), "empty"),
        (torch.tensor([float("nan")] * 8000), "NaN"),
        (torch.tensor([float("inf")] * 8000), "NaN or infinite"),
        (torch.stack([wave, wave])[None], "mono"),  # [batch, 2 channels, samples]
        (torch.zeros(8000, dtype=torch.int16), "float"),
        (torch.zeros(100), "too short"),
        (torch.zeros(2, 3, 4, 5), "shape"),
    ]
    for value, message in cases:
        with pytest.raises(ValueError, match=message):
            model(value)
    with pytest.raises(ValueError, match="24000 Hz"):
        model(wave, sampling_rate=24000)
    with pytest.raises(ValueError, match="mono"):
        model.embed([np.stack([wave.numpy(), wave.numpy()])])  # a stereo clip
    with pytest.raises(ValueError, match="exceed"):
        model(wave[None], lengths=torch.tensor([9000]))
    with pytest.raises(ValueError, match="empty"):
        model(wave[None], lengths=torch.tensor([0]))
    with pytest.raises(ValueError, match="no waveforms"):
        model.embed([])
    model(wave, sampling_rate=16000)  # the right rate is fine


def test_speaker_similarity():
    a = torch.tensor([1.0, 0.0, 0.0])
    assert speaker_similarity(a, a).item() == pytest.approx(1.0)
    assert speaker_similarity(a, torch.tensor([0.0, 2.0, 0.0])).item() == pytest.approx(0.0)
    assert speaker_similarity(np.array([1.0, 1.0]), np.array([-3.0, -3.0])).item() == pytest.approx(-1.0)
    assert speaker_similarity(torch.randn(4, 3), a).shape == (4,)
    with pytest.raises(ValueError, match="sizes differ"):
        speaker_similarity(torch.zeros(3), torch.zeros(4))


def test_equal_error_rate_and_metrics():
    from dualspeechlm.training.train_speaker_encoder import equal_error_rate, evaluate_embeddings

    assert equal_error_rate([0.9, 0.8, 0.1, 0.2], [True, True, False, False]) == 0.0
    assert equal_error_rate([0.1, 0.2, 0.9, 0.8], [True, True, False, False]) == 1.0
    assert equal_error_rate([0.9, 0.5, 0.6, 0.1], [True, True, False, False]) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        equal_error_rate([0.1, 0.2], [True, True])

    # well separated clusters: perfect identification, zero EER
    generator = torch.Generator().manual_seed(0)
    centres = torch.nn.functional.normalize(torch.randn(4, 512, generator=generator), dim=-1)

    def cluster(voice, n):
        noisy = centres[voice] + 0.01 * torch.randn(n, 512, generator=generator)
        return torch.nn.functional.normalize(noisy, dim=-1)

    embeddings = {"validation": torch.cat([cluster(v, 3) for v in range(3)]),
                  "test": torch.cat([cluster(v, 3) for v in range(3)]),
                  "test_unseen_voice": cluster(3, 6)}
    speakers = {"validation": [n for n in "abc" for _ in range(3)], "test": [n for n in "abc" for _ in range(3)],
                "test_unseen_voice": ["u"] * 6}
    metrics = evaluate_embeddings(embeddings, speakers)
    assert metrics["identification_accuracy_seen"] == 1.0
    assert metrics["identification_accuracy_with_unseen"] == 1.0
    assert metrics["eer_all"] == 0.0 and metrics["eer_unseen_vs_rest"] == 0.0
    assert metrics["mean_cosine_same"] > 0.9 > metrics["mean_cosine_different"]


def test_extra_voices_are_never_corpus_voices(espeak):
    from dualspeechlm.processing.corpus import TRAIN_VOICES, UNSEEN_VOICE
    from dualspeechlm.training.train_speaker_encoder import ACCENTS, VARIANTS, extra_voices

    with pytest.raises(ValueError, match="available"):
        extra_voices(len(ACCENTS) * len(VARIANTS) + 1, seed=0)
    voices = extra_voices(200, seed=0)
    speakers = [v.speaker for v in voices]
    assert len(set(speakers)) == len(speakers) == 200 and {v.engine for v in voices} == {"espeak-ng"}
    corpus_voices = (*TRAIN_VOICES, UNSEEN_VOICE)
    assert not {(v.engine, v.speaker) for v in voices} & {(v.engine, v.speaker) for v in corpus_voices}
    assert not {v.name for v in voices} & {v.name for v in corpus_voices}


def test_cli_help(capsys):
    from dualspeechlm.training.train_speaker_encoder import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "--steps" in capsys.readouterr().out


def test_tiny_training_separates_voices(speech_engines):
    """A few steps on a handful of clips of 3 corpus voices lower the loss and make held-out
    clips of the same voice closer than clips of different voices."""
    from dualspeechlm.processing.corpus import TRAIN_VOICES, grammar
    from dualspeechlm.training.train_speaker_encoder import log_mel_features, synthesize_many, train_speaker_encoder

    voices = [TRAIN_VOICES[0], TRAIN_VOICES[1], TRAIN_VOICES[3]]  # awb, rms, slt_hts: three real speakers
    sentences = grammar.unique_sentences(random.Random(0), 9)
    train_jobs = [(text, voice) for voice in voices for text in sentences[:6]]
    test_jobs = [(text, voice) for voice in voices for text in sentences[6:]]
    audio = synthesize_many(train_jobs + test_jobs, workers=2, progress=False)
    train_audio, test_audio = audio[: len(train_jobs)], audio[len(train_jobs):]

    names = np.array([voice.name for _, voice in test_jobs])
    same = names[:, None] == names[None, :]
    off_diagonal = ~np.eye(len(names), dtype=bool)

    def same_minus_different(model):
        similarity = (model.embed(test_audio) @ model.embed(test_audio).T).numpy()
        return similarity[same & off_diagonal].mean(), similarity[~same].mean()

    torch.manual_seed(0)
    model = SpeakerEncoderModel(SpeakerEncoderConfig(**TINY))
    same_before, different_before = same_minus_different(model)
    features = log_mel_features(model, train_audio)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a small network trains faster on one thread when the cores are shared
    try:
        losses = train_speaker_encoder(model, features, [voice.name for _, voice in train_jobs], steps=40,
                                       batch_size=16, learning_rate=5e-3, min_crop=60, max_crop=150, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), losses

    same_after, different_after = same_minus_different(model)
    assert same_after > different_after + 0.2, (same_after, different_after)
    # an untrained network already rates everything alike (cosines near 1): training made the gap
    assert same_after - different_after > same_before - different_before + 0.2
