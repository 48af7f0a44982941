import json
import os

import numpy as np
import pytest
import torch
from transformers import (
    AutoFeatureExtractor,
    AutoModel,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
)

from dualspeechlm.configuration_ustokenizer import USTokenizerConfig
from dualspeechlm.feature_extraction_ustokenizer import USTokenizerFeatureExtractor
from dualspeechlm.modeling_ustokenizer import RealLengthWhisperEncoder, USTokenizerModel
from dualspeechlm.processing.corpus import TRAIN_VOICES, synthesize

from conftest import run_without_package

TINY_ENCODER = dict(d_model=64, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=128,
                    decoder_layers=1, decoder_attention_heads=4, decoder_ffn_dim=128)
TINY = dict(encoder_config=TINY_ENCODER, conv_hidden_size=48, codebook_dim=16, codebook_size=64, llm_hidden_size=32)
LONG_TEXT = "the quick brown fox jumps over the lazy dog while the cat sleeps on the warm mat " * 4


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(seed: int = 0, **overrides) -> USTokenizerModel:
    torch.manual_seed(seed)
    return USTokenizerModel(USTokenizerConfig(**{**TINY, **overrides})).eval()


@pytest.fixture(scope="module")
def speech(espeak):
    return [synthesize(text, voice) for text, voice in (
        ("the quiet horse slept behind the old bridge", TRAIN_VOICES[0]),
        ("anna saw the cat", TRAIN_VOICES[1]),
        ("seven green birds sang in the morning rain", TRAIN_VOICES[2]),
    )]


@pytest.fixture(scope="module")
def batch(speech):
    return USTokenizerFeatureExtractor()(speech, sampling_rate=16000, return_tensors="pt")


def test_config_defaults_presets_and_round_trip(tmp_path):
    paper = USTokenizerConfig.paper()
    assert paper.encoder_config.d_model == 1024 and paper.encoder_config.encoder_layers == 24
    assert (paper.codebook_size, paper.codebook_dim, paper.ema_decay) == (1024, 1024, 0.8)
    assert (paper.commitment_weight, paper.reconstruction_weight, paper.understanding_weight) == (1, 45, 5)
    assert ((paper.downsample_kernel_size, paper.downsample_stride, paper.num_conv_blocks, paper.num_residual_units)
            == (3, 2, 2, 2))
    assert paper.mel_frames_per_token == 4 and paper.max_mel_frames == 3000 and paper.num_tokens(100) == 25
    tiny = USTokenizerConfig.tiny(llm_hidden_size=960)
    assert tiny.encoder_config.d_model == 384 and tiny.llm_hidden_size == 960
    # the tiny preset's measured choice: no residual blocks, a codebook as wide as the encoder, the transcript CTC
    assert (tiny.num_conv_blocks, tiny.conv_hidden_size, tiny.codebook_dim, tiny.codebook_size) == (0, 384, 384, 1024)
    assert tiny.transcript_ctc_weight == 5 and paper.transcript_ctc_weight == 0  # the paper has no such loss
    assert USTokenizerConfig.tiny(num_conv_blocks=2).num_conv_blocks == 2  # overrides win
    assert USTokenizerConfig(encoder_config=TINY_ENCODER).encoder_config.d_model == 64  # dict -> WhisperConfig
    tiny.save_pretrained(tmp_path)
    loaded = USTokenizerConfig.from_pretrained(tmp_path)
    assert isinstance(loaded.encoder_config, WhisperConfig) and loaded.to_dict() == tiny.to_dict()
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "dualspeechlm_ustokenizer"
    with pytest.raises(ValueError, match="ids_pad_value"):
        USTokenizerConfig(ids_pad_value=0)
    with pytest.raises(ValueError, match="odd"):
        USTokenizerConfig(downsample_kernel_size=4)


def test_real_length_encoder_parity_with_whisper(whisper_dir, espeak):
    """30 s input: identical to transformers' WhisperEncoder. Short clips: the real-length run differs
    from the first frames of the padded-to-30 s run, since there attention also sees the padding
    (measured on Whisper tiny.en, relative L2 difference: 2 s 0.325, 5 s 0.206)."""
    encoder = RealLengthWhisperEncoder.from_whisper(whisper_dir).eval()
    reference = WhisperForConditionalGeneration.from_pretrained(whisper_dir).get_encoder().eval()
    speech = np.resize(synthesize(LONG_TEXT, TRAIN_VOICES[0]), 30 * 16000).astype(np.float32)
    clips = [speech, speech[: 2 * 16000], speech[: 5 * 16000]]
    padded = torch.from_numpy(WhisperFeatureExtractor()(clips, sampling_rate=16000,
                                                        return_tensors="np").input_features)
    with torch.no_grad():
        expected = reference(padded).last_hidden_state
        full = encoder(padded[:1]).last_hidden_state
        assert full.shape == (1, 1500, 384)
        assert (full - expected[:1]).abs().max() < 1e-5
        for index, seconds, relative in ((1, 2, 0.325), (2, 5, 0.206)):
            short = encoder(padded[index: index + 1, :, : seconds * 100]).last_hidden_state[0]
            head = expected[index, : seconds * 50]
            assert short.shape == head.shape == (seconds * 50, 384)
            measured = ((short - head).norm() / head.norm()).item()
            assert abs(measured - relative) < 0.05, measured
            assert torch.nn.functional.cosine_similarity(short, head, dim=-1).mean() > 0.9


def test_from_whisper_loads_encoder_weights(whisper_dir):
    whisper = WhisperForConditionalGeneration.from_pretrained(whisper_dir)
    tokenizer = USTokenizerModel.from_whisper(whisper_dir, codebook_size=32, codebook_dim=8, conv_hidden_size=16,
                                              llm_hidden_size=8)
    from_model = RealLengthWhisperEncoder.from_whisper(whisper)
    expected = whisper.get_encoder().state_dict()
    for encoder in (tokenizer.encoder, from_model):
        assert all(torch.equal(value, expected[name]) for name, value in encoder.state_dict().items())
    assert tokenizer.config.encoder_config.d_model == 384
    assert not any(p.requires_grad for p in tokenizer.encoder.parameters())


def test_25_tokens_per_second():
    model = tiny_model()
    extractor = USTokenizerFeatureExtractor()
    seconds = [0.1, 1.0, 2.0, 2.5, 3.97]
    audio = [np.random.default_rng(i).normal(0, 0.1, int(s * 16000)).astype(np.float32) for i, s in enumerate(seconds)]
    features = extractor(audio, sampling_rate=16000, return_tensors="pt")
    encoded = model.encode(features.input_features, features.attention_mask)
    frames = features.attention_mask.sum(-1)
    assert frames.tolist() == [10, 100, 200, 250, 397]
    assert encoded.lengths.tolist() == [3, 25, 50, 63, 100] == [model.config.num_tokens(f) for f in frames.tolist()]
    assert encoded.ids.shape == (5, 100) and encoded.ids.dtype == torch.long


def test_batched_encode_equals_one_by_one(batch):
    model = tiny_model()
    encoded = model.encode(batch.input_features, batch.attention_mask)
    for index, frames in enumerate(batch.attention_mask.sum(-1).tolist()):
        single = model.encode(batch.input_features[index: index + 1, :, :frames])
        length = encoded.lengths[index]
        assert single.lengths.item() == length and single.ids.shape[1] == length
        assert torch.equal(single.ids[0], encoded.ids[index, :length])
        assert (encoded.ids[index, length:] == model.config.ids_pad_value).all()
    assert 0 <= encoded.ids[encoded.ids >= 0].min() and encoded.ids.max() < model.config.codebook_size


def test_save_load_and_auto_classes(batch, tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    USTokenizerFeatureExtractor().save_pretrained(tmp_path)
    assert ({"modeling_ustokenizer.py", "configuration_ustokenizer.py", "feature_extraction_ustokenizer.py"}
            <= set(os.listdir(tmp_path)))
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModel"] == "modeling_ustokenizer.USTokenizerModel"
    assert "auto_map" in json.loads((tmp_path / "preprocessor_config.json").read_text())
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(loaded) is USTokenizerModel
    assert type(AutoFeatureExtractor.from_pretrained(tmp_path)) is USTokenizerFeatureExtractor
    assert loaded.quantizer.zero.item() == 0.0  # a non-persistent buffer from_pretrained leaves unset
    expected = model.encode(batch.input_features, batch.attention_mask).ids
    assert torch.equal(loaded.encode(batch.input_features, batch.attention_mask).ids, expected)


FRESH_PROCESS = """
import numpy as np
from transformers import AutoFeatureExtractor, AutoModel
folder = sys.argv[1]
extractor = AutoFeatureExtractor.from_pretrained(folder, trust_remote_code=True)
model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
audio = np.load(sys.argv[2])
features = extractor([audio[key] for key in sorted(audio.files)], sampling_rate=16000, return_tensors="pt")
np.save(sys.argv[2] + ".ids.npy", model.encode(features.input_features, features.attention_mask).ids.numpy())
"""


def test_trust_remote_code_in_a_fresh_process_without_the_package(speech, batch, tmp_path):
    folder = tmp_path / "ustokenizer"
    model = tiny_model()
    model.save_pretrained(folder)
    USTokenizerFeatureExtractor().save_pretrained(folder)
    audio = tmp_path / "audio.npz"
    np.savez(audio, **{f"clip{index}": clip for index, clip in enumerate(speech)})
    result = run_without_package(FRESH_PROCESS, folder, audio, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    expected = model.encode(batch.input_features, batch.attention_mask).ids.numpy()
    assert np.array_equal(np.load(f"{audio}.ids.npy"), expected)


def test_forward_outputs_and_cached_encoder_path(batch):
    model = tiny_model()
    output = model(batch.input_features, batch.attention_mask)
    tokens = output.token_lengths
    assert torch.equal(tokens, model.encode(batch.input_features, batch.attention_mask).lengths)
    assert torch.equal(output.codes, model.encode(batch.input_features, batch.attention_mask).ids)
    assert output.quantized_latents.shape == (3, tokens.max(), 16)
    assert output.adapter_embeddings.shape == (3, tokens.max(), 32)
    assert output.adapter_embeddings[1, tokens[1]:].abs().max() == 0
    assert output.encoder_hidden_states.shape == (3, output.encoder_lengths.max(), 64)
    for loss in (output.loss, output.commitment_loss, output.reconstruction_loss):
        assert torch.isfinite(loss) and loss > 0
    assert torch.allclose(output.loss, output.commitment_loss + 45 * output.reconstruction_loss)
    cached = model(encoder_hidden_states=output.encoder_hidden_states, encoder_lengths=output.encoder_lengths)
    assert torch.equal(cached.codes, output.codes) and torch.allclose(cached.loss, output.loss)
    with pytest.raises(ValueError, match="exactly one"):
        model()


def test_ema_update_ignores_padding(batch):
    model = tiny_model(dead_code_threshold=0.0).train()
    noisy = batch.input_features.clone()
    noisy[batch.attention_mask[:, None, :].expand_as(noisy) == 0] = 100.0  # garbage in the padding
    output = model(noisy, batch.attention_mask)
    decay, valid = model.config.ema_decay, output.token_lengths.sum()
    cluster_size = model.quantizer._codebook.cluster_size  # from ones: decay * 1 + (1 - decay) * counts
    assert torch.allclose(cluster_size.sum(), decay * 64 + (1 - decay) * valid)
    reference = tiny_model(dead_code_threshold=0.0).train()
    assert torch.equal(reference(batch.input_features, batch.attention_mask).codes, output.codes)
    assert torch.equal(reference.quantizer.codebook, model.quantizer.codebook)


@pytest.mark.parametrize("kmeans_init", [False, True])
def test_training_steps_lower_the_losses_and_leave_the_encoder_alone(batch, kmeans_init):
    model = tiny_model(kmeans_init=kmeans_init).train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    output = model(batch.input_features, batch.attention_mask)
    output.loss.backward(retain_graph=True)
    assert all(p.grad is None for p in model.encoder.parameters()) and not model.encoder.training
    assert model.downsample.weight.grad.abs().sum() > 0 and model.adapter_conv.weight.grad is None
    output.adapter_embeddings.sum().backward()  # the adapter reaches the conv encoder (straight-through)
    assert model.adapter_conv.weight.grad.abs().sum() > 0
    optimizer.zero_grad()
    cache = (output.encoder_hidden_states, output.encoder_lengths)
    losses = []
    for _ in range(12):
        step = model(encoder_hidden_states=cache[0], encoder_lengths=cache[1])
        step.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(step.loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


def test_code_embeddings_are_the_adapter_output_averaged_over_neighbours():
    """Every [left, k, right] of the codebook through `adapt`, averaged over left and right, is code k's embedding
    (the adapter is linear and its Conv1d sees one neighbour each side)."""
    model = tiny_model(codebook_size=8)
    torch.nn.init.normal_(model.adapter_conv.bias)  # post_init zeroes it: make the bias count
    codes = model.quantizer.get_output_from_indices(torch.arange(8))
    left, k, right = torch.meshgrid(torch.arange(8), torch.arange(8), torch.arange(8), indexing="ij")
    sequences = codes[torch.stack([left, k, right], -1).reshape(-1, 3)]  # [512, 3, codebook_dim]
    with torch.no_grad():
        middle = model.adapt(sequences, torch.ones(512, 3, dtype=torch.bool))[:, 1].reshape(8, 8, 8, -1)
    embeddings = model.code_embeddings()
    assert embeddings.shape == (8, 32)
    torch.testing.assert_close(embeddings, middle.mean((0, 2)), atol=1e-5, rtol=1e-5)
