import numpy as np
import pytest
import torch
from transformers import AutoModel

from dualspeechlm.configuration_mel_codec import MelCodecConfig
from dualspeechlm.modeling_mel_codec import MelCodecModel
from dualspeechlm.processing.corpus import TRAIN_VOICES, synthesize
from dualspeechlm.training.train_codec import (
    multi_resolution_stft_loss,
    random_crops,
    train_autoencoder,
    train_vocoder,
    vocoder_loss,
)

from conftest import run_without_package

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(hidden_size=32, latent_size=16, encoder_layers=2, decoder_layers=2, num_quantizers=2, codebook_size=32,
            vocoder_hidden_size=32, vocoder_intermediate_size=64, vocoder_layers=2)


@pytest.fixture(scope="module")
def speech(speech_engines):
    return [torch.from_numpy(synthesize(text, voice)) for text, voice in (
        ("the quiet horse slept behind the old bridge", TRAIN_VOICES[0]),
        ("anna saw the cat", TRAIN_VOICES[1]),
    )]


@pytest.fixture(scope="module")
def codec(speech):
    torch.manual_seed(0)
    model = MelCodecModel(MelCodecConfig(**TINY)).eval()
    model.encode(speech)  # k-means initialises the codebooks on real frames
    return model


def test_frame_rate_and_shapes(codec, speech):
    assert codec.frame_rate == 50 and codec.num_codebooks == 2 and codec.codebook_size == 32
    encoded = codec.encode(speech)
    frames = [-(-len(w) // 320) for w in speech]
    assert encoded.codes.shape == (2, 2, max(frames)) and encoded.lengths.tolist() == frames
    assert encoded.codes.dtype == torch.long and 0 <= encoded.codes.min() and encoded.codes.max() < 32
    decoded = codec.decode(encoded.codes, encoded.lengths)
    assert decoded.lengths.tolist() == [f * 320 for f in frames]
    assert all(0 <= f * 320 - len(w) < 320 for f, w in zip(frames, speech))
    assert decoded.waveforms[1, decoded.lengths[1]:].abs().max() == 0


def test_batch_equals_one_by_one(codec, speech):
    batch = codec.encode(speech)
    for i, waveform in enumerate(speech):
        alone = codec.encode(waveform)
        assert torch.equal(batch.codes[i, :, : alone.lengths[0]], alone.codes[0])
        audio = codec.decode(alone.codes)
        batched_audio = codec.decode(batch.codes, batch.lengths).waveforms[i, : audio.lengths[0]]
        torch.testing.assert_close(batched_audio, audio.waveforms[0], atol=1e-5, rtol=1e-4)


def test_griffin_lim_batch_matches_in_spectrum(codec, speech):
    """Griffin-Lim is batch-exact on equal input (see test_spectral), but it amplifies the ~1e-7
    float differences between a batched and a single conv decoder into different phases; the
    magnitude spectrum, what a listener and an ASR judge hear, stays the same."""
    codec.config.vocoder = "griffin_lim"
    try:
        batch = codec.encode(speech)
        alone = codec.decode(codec.encode(speech[0]).codes)
        batched = codec.decode(batch.codes, batch.lengths).waveforms[:1, : alone.lengths[0]]
        mel_alone, mel_batched = codec.mel(alone.waveforms), codec.mel(batched)
        assert (mel_alone - mel_batched).abs().mean() < 0.05 * mel_alone.abs().mean()
    finally:
        codec.config.vocoder = "neural"


def test_save_and_load_give_identical_codes_and_audio(codec, speech, tmp_path):
    codec.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    for loaded in (MelCodecModel.from_pretrained(tmp_path), AutoModel.from_pretrained(tmp_path)):
        assert isinstance(loaded, MelCodecModel)
        loaded.eval()
        codes = codec.encode(speech)
        assert torch.equal(loaded.encode(speech).codes, codes.codes)
        assert torch.equal(loaded.decode(codes.codes, codes.lengths).waveforms,
                           codec.decode(codes.codes, codes.lengths).waveforms)


@pytest.mark.parametrize("waveforms, kwargs, message", [
    (torch.zeros(0), {}, "empty"),
    (torch.full((1, 1600), float("nan")), {}, "NaN"),
    (torch.zeros(1, 2, 1600), {}, "mono"),
    (torch.zeros(1, 1600), {"sampling_rate": 48000}, "48000 Hz but this codec expects 16000"),
    (torch.zeros(2, 1600), {"lengths": [1600, 2000]}, "do not fit"),
])
def test_bad_audio_is_a_clear_error(codec, waveforms, kwargs, message):
    with pytest.raises(ValueError, match=message):
        codec.encode(waveforms, **kwargs)


def test_bad_codes_are_a_clear_error(codec):
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 32\)"):
        codec.decode(torch.full((1, 2, 5), 32))
    with pytest.raises(ValueError, match=r"expected codes \[batch, 2, frames>0\]"):
        codec.decode(torch.zeros(1, 3, 5, dtype=torch.long))


def test_config_rejects_unknown_vocoder():
    with pytest.raises(ValueError, match="vocoder must be"):
        MelCodecConfig(vocoder="wavenet")


def test_training_lowers_the_losses_on_a_real_batch(speech):
    torch.manual_seed(0)
    model = MelCodecModel(MelCodecConfig(**TINY))
    generator = torch.Generator().manual_seed(0)
    batch, lengths = random_crops(speech, 2, 12000, generator)
    model.encode(speech)  # k-means init
    before = model(batch, lengths).reconstruction_loss.item()
    train_autoencoder(model, speech, 40, 4, 12000, 3e-3, generator)
    assert model(batch, lengths).reconstruction_loss.item() < 0.8 * before  # standardised mels start near their mean
    model.eval()
    before = vocoder_loss(model, batch, lengths).item()
    train_vocoder(model, speech, 40, 4, 12000, 1e-2, generator)
    assert vocoder_loss(model, batch, lengths).item() < 0.85 * before

    # decoder + vocoder on the audio loss: it falls, and the encoder and codebooks (so the codes) stay
    codes = model.encode(speech).codes
    frozen = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith(("decoder.", "vocoder."))}
    before = vocoder_loss(model, batch, lengths, train_decoder=True).item()
    train_vocoder(model, speech, 20, 4, 12000, 3e-3, generator, train_decoder=True)
    assert vocoder_loss(model, batch, lengths, train_decoder=True).item() < before
    assert all(torch.equal(frozen[k], v) for k, v in model.state_dict().items() if k in frozen)
    assert torch.equal(model.encode(speech).codes, codes) and not model.training


def test_stft_loss_is_zero_only_for_equal_audio(speech):
    audio = speech[0][None]
    assert multi_resolution_stft_loss(audio, audio) < 1e-5
    assert multi_resolution_stft_loss(0.5 * audio, audio) > 0.1


def test_random_crops_have_lengths(speech):
    batch, lengths = random_crops(speech, 6, 40000, torch.Generator().manual_seed(0))
    assert batch.shape == (6, 40000) and (lengths <= 40000).all()
    for row, length in zip(batch, lengths):
        assert row[length:].abs().sum() == 0


def test_loaded_codec_has_its_constant_buffers(codec, tmp_path):
    codec.save_pretrained(tmp_path)
    loaded = MelCodecModel.from_pretrained(tmp_path)
    for (name, original), (_, restored) in zip(codec.named_buffers(), loaded.named_buffers()):
        if name.endswith(("window", "filters", "pseudo_inverse", ".zero")):
            assert torch.equal(original, restored), name


def test_trust_remote_code_in_a_fresh_process_without_the_package(codec, speech, tmp_path):
    codec.save_pretrained(tmp_path / "codec")
    np.save(tmp_path / "audio.npy", speech[0].numpy())
    script = """
import numpy as np, torch
from transformers import AutoModel
folder, audio = sys.argv[1:3]
model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
np.save(audio + ".codes.npy", model.encode(torch.from_numpy(np.load(audio))).codes.numpy())
"""
    result = run_without_package(script, tmp_path / "codec", tmp_path / "audio.npy", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert np.array_equal(np.load(tmp_path / "audio.npy.codes.npy"), codec.encode(speech[0]).codes.numpy())
