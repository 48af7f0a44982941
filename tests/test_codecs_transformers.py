"""`TransformersCodec` and `load_codec` on tiny random EnCodec, DAC, Mimi and X-Codec models (16 kHz, CPU).

Random codec models quantize everything to code 0 (their codebooks start at zero), so each tiny model's
codebooks are spread out first; the tests check that codes really vary.
"""

import math

import pytest
import torch
from transformers import (
    DacConfig,
    DacModel,
    EncodecConfig,
    EncodecModel,
    GPT2Config,
    GPT2LMHeadModel,
    HubertConfig,
    MimiConfig,
    MimiModel,
    XcodecConfig,
    XcodecModel,
)

from dualspeechlm.codecs import SpeechCodecMixin
from dualspeechlm.codecs.auto import SUPPORTED_TRANSFORMERS_CODECS, load_codec
from dualspeechlm.codecs.transformers_codecs import TransformersCodec

KINDS = ["encodec", "dac", "mimi", "xcodec"]
CODEBOOKS = {"encodec": 2, "dac": 3, "mimi": 4, "xcodec": 2}  # encodec: 12 kbps of [6, 12, 24]
HOP = {"encodec": 16, "dac": 8, "mimi": 16, "xcodec": 8}  # samples per code frame at 16 kHz

# Frames at the end of the *shorter* item of a padded batch that may legitimately differ from encoding /
# decoding it alone. EnCodec and Mimi are causal (left-padded convs, unidirectional LSTM / causal attention):
# nothing to the right of a frame reaches it, so batching changes nothing. DAC's convs are centred: where the
# lone item's layers see zero padding, the batch's layers see activations computed from the padding, and
# this spreads left by every layer's right context. For the tiny DAC below (ratios [2, 4], res units with
# dilations 1/3/9 -> 39 steps of right context per block): code frame f reads samples up to 8f + 140, so the
# last 18 frames may change; decoded samples of frame f read code frames up to f + 19, so the last 19 frames'
# samples may change (measured on a 32-frame item: its latents move in the last 13 frames, so far without
# flipping a code, its decoded audio in the last 8-12). Real DAC 16 kHz ([2, 4, 8, 8]) by the same count: codes
# read ~7.3 frames (0.23 s) past their own, decoded audio ~10 frames (0.32 s).
# X-Codec runs per item by default (its HuBERT attends over the whole padded input), hence exact.
BATCH_TAIL = {"encodec": (0, 0), "dac": (18, 19), "mimi": (0, 0), "xcodec": (0, 0)}  # (encode, decode) frames


def _tiny_model(kind: str):
    torch.manual_seed(0)
    if kind == "encodec":
        config = EncodecConfig(sampling_rate=16_000, hidden_size=16, num_filters=4, upsampling_ratios=[4, 4],
                               num_lstm_layers=1, codebook_size=64, target_bandwidths=[6.0, 12.0, 24.0])
        model = EncodecModel(config)
    elif kind == "dac":
        config = DacConfig(sampling_rate=16_000, encoder_hidden_size=4, downsampling_ratios=[2, 4],
                           decoder_hidden_size=16, n_codebooks=3, codebook_size=64, codebook_dim=4)
        model = DacModel(config)  # random nn.Embedding codebooks already differ
    elif kind == "mimi":
        config = MimiConfig(sampling_rate=16_000, hidden_size=16, num_filters=4, upsampling_ratios=[4, 2],
                            num_hidden_layers=1, intermediate_size=32, num_attention_heads=2, num_key_value_heads=2,
                            codebook_size=64, codebook_dim=8, num_quantizers=4, num_semantic_quantizers=1,
                            vector_quantization_hidden_dimension=8, upsample_groups=16, sliding_window=16)
        model = MimiModel(config)
    else:
        # HuBERT's feature convs (kernels 6, 2; strides 4, 2) must hop like the acoustic DAC ([4, 2] = 8)
        hubert = HubertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                              conv_dim=(8, 8), conv_stride=(4, 2), conv_kernel=(6, 2), num_conv_pos_embeddings=4,
                              num_conv_pos_embedding_groups=2)
        dac = dict(encoder_hidden_size=4, downsampling_ratios=[4, 2], upsampling_ratios=[4, 2], decoder_hidden_size=16,
                   codebook_dim=4, codebook_size=64, n_codebooks=2)
        config = XcodecConfig(sample_rate=16_000, codebook_size=64, target_bandwidths=[12.0, 24.0],
                              acoustic_model_config=dac, semantic_model_config=hubert)
        model = XcodecModel(config)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        if kind == "encodec":  # its latents sit far from 0 with little spread: seed codebook 0 with real latents
            latents = model.encoder(torch.randn(1, 1, 4096, generator=generator) * 0.3)[0].T
            for i, layer in enumerate(model.quantizer.layers):
                noise = torch.randn(layer.codebook.embed.shape, generator=generator) * latents.std(0)
                layer.codebook.embed.copy_(latents[torch.randperm(len(latents), generator=generator)[:64]] + noise
                                           if i == 0 else noise * 0.3)
        for name, buffer in model.named_buffers():
            if kind != "encodec" and name.endswith(("codebook.embed", "codebook.embed_sum")):
                buffer.copy_(torch.randn(buffer.shape, generator=generator) * 0.3)
    return model.eval()


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def codecs():
    return {kind: TransformersCodec(_tiny_model(kind), num_codebooks=CODEBOOKS[kind]) for kind in KINDS}


def _audio(*lengths: int, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(n, generator=generator) * 0.3 for n in lengths]


@pytest.mark.parametrize("kind", KINDS)
def test_properties(codecs, kind):
    codec = codecs[kind]
    assert kind in SUPPORTED_TRANSFORMERS_CODECS and isinstance(codec, SpeechCodecMixin)
    assert (codec.sampling_rate, codec.codebook_size, codec.num_codebooks) == (16_000, 64, CODEBOOKS[kind])
    assert codec.frame_rate == 16_000 / HOP[kind] and codec.device == torch.device("cpu")
    codec.train()  # e.g. from a parent module: the wrapped codec must stay in eval mode
    assert codec.training and not codec.model.training
    codec.eval()


@pytest.mark.parametrize("kind", KINDS)
def test_encode_shapes_and_lengths(codecs, kind):
    codec = codecs[kind]
    lengths = [403, 250, 9]
    out = codec.encode(_audio(*lengths))
    frames = [math.ceil(n * codec.frame_rate / codec.sampling_rate) for n in lengths]
    assert out.lengths.tolist() == frames
    assert out.codes.shape == (3, CODEBOOKS[kind], max(frames)) and out.codes.dtype == torch.long
    assert out.codes.min() >= 0 and out.codes.max() < codec.codebook_size
    assert (out.codes[1, :, frames[1]:] == 0).all() and (out.codes[2, :, frames[2]:] == 0).all()
    assert all(len(torch.unique(row)) > 3 for row in out.codes[0])  # real codes, not one collapsed entry


@pytest.mark.parametrize("kind", KINDS)
def test_decode_shapes_and_lengths(codecs, kind):
    codec = codecs[kind]
    lengths = [403, 250, 9]
    codes = codec.encode(_audio(*lengths))
    out = codec.decode(codes.codes, codes.lengths)
    assert out.lengths.tolist() == [f * HOP[kind] for f in codes.lengths.tolist()]
    assert out.waveforms.shape == (3, int(out.lengths.max())) and out.waveforms.dtype == torch.float32
    for n, m in zip(lengths, out.lengths.tolist()):
        assert n <= m < n + HOP[kind]  # a round trip gives the input length, rounded up to whole frames
    assert torch.isfinite(out.waveforms).all() and out.waveforms[0].abs().max() > 0
    assert (out.waveforms[1, out.lengths[1]:] == 0).all() and (out.waveforms[2, out.lengths[2]:] == 0).all()


@pytest.mark.parametrize("kind", KINDS)
def test_batched_encode_matches_one_by_one(codecs, kind):
    codec = codecs[kind]
    # 241 and 250 end inside a frame: called directly, EnCodec (reflect padding of the partial frame) and Mimi
    # (zero padding inside each conv vs activations of the batch's padding) change that frame in a batch; the
    # adapter zero-pads every item to whole frames first, so a causal codec's codes do not change at all
    audio = _audio(403, 250, 241, seed=1)
    batch = codec.encode(audio)
    assert torch.equal(batch.codes[0], codec.encode(audio[0]).codes[0])  # the longest item is never padded
    for i in (1, 2):
        alone = codec.encode(audio[i]).codes[0]
        exact = alone.shape[-1] - BATCH_TAIL[kind][0]
        assert batch.lengths[i] == alone.shape[-1] and exact > 0
        assert torch.equal(batch.codes[i, :, :exact], alone[:, :exact])


@pytest.mark.parametrize("kind", KINDS)
def test_batched_decode_matches_one_by_one(codecs, kind):
    codec = codecs[kind]
    codes = codec.encode(_audio(403, 250, seed=2))
    batch = codec.decode(codes.codes, codes.lengths)
    for i in range(2):
        alone = codec.decode(codes.codes[i : i + 1, :, : codes.lengths[i]])
        assert alone.lengths[0] == batch.lengths[i]
        exact = int(alone.lengths[0]) - (BATCH_TAIL[kind][1] * HOP[kind] if i == 1 else 0)
        scale = alone.waveforms.abs().max()
        torch.testing.assert_close(batch.waveforms[i, :exact], alone.waveforms[0, :exact], rtol=0, atol=1e-5 * scale)


def test_per_item_makes_dac_batch_invariant_and_is_needed_for_xcodec():
    long, short = _audio(403, 250, seed=1)
    dac = TransformersCodec(_tiny_model("dac"), per_item=True)
    codes = dac.encode([long, short])
    assert torch.equal(codes.codes[1, :, : codes.lengths[1]], dac.encode(short).codes[0])
    wave = dac.decode(codes.codes, codes.lengths).waveforms[1, : codes.lengths[1] * 8]
    assert torch.equal(wave, dac.decode(codes.codes[1:, :, : codes.lengths[1]]).waveforms[0])
    dac.per_item = False  # batched in one call, the end of the shorter item's audio changes (BATCH_TAIL)
    assert not torch.allclose(dac.decode(codes.codes, codes.lengths).waveforms[1, : codes.lengths[1] * 8], wave)
    # X-Codec batched in one call: its HuBERT branch attends over the padding, so even early frames change
    xcodec = TransformersCodec(_tiny_model("xcodec"), per_item=False)
    batched = xcodec.encode([long, short]).codes[1, :, :16]
    assert not torch.equal(batched, xcodec.encode(short).codes[0, :, :16])


@pytest.mark.parametrize("kind", KINDS)
def test_save_pretrained_then_load_codec(codecs, kind, tmp_path):
    codec = codecs[kind]
    codec.save_pretrained(tmp_path)
    loaded = load_codec(tmp_path)
    assert isinstance(loaded, TransformersCodec) and type(loaded.model) is type(codec.model)
    settings = lambda c: (c.num_codebooks, c.per_item, c.sampling_rate, c.frame_rate, c.codebook_size)  # noqa: E731
    assert settings(loaded) == settings(codec)
    audio = _audio(403, 250, seed=3)
    codes, codes_loaded = codec.encode(audio), loaded.encode(audio)
    assert torch.equal(codes.codes, codes_loaded.codes) and torch.equal(codes.lengths, codes_loaded.lengths)
    waveforms = codec.decode(codes.codes, codes.lengths).waveforms
    assert torch.equal(waveforms, loaded.decode(codes.codes, codes.lengths).waveforms)


def test_num_codebooks_choice(tmp_path):
    model = _tiny_model("encodec")
    two, four = TransformersCodec(model, num_codebooks=2), TransformersCodec(model, num_codebooks=4)
    assert TransformersCodec(model).num_codebooks == 1  # EnCodec's own default: the lowest bandwidth (6 kbps)
    assert four.encode_kwargs == {"bandwidth": 24.0}
    audio = _audio(300)
    codes = four.encode(audio).codes
    assert codes.shape[1] == 4 and torch.equal(codes[:, :2], two.encode(audio).codes)  # residual VQ: a prefix
    with pytest.raises(ValueError, match=r"cannot encode with 3 codebooks; choose one of \[1, 2, 4\]"):
        TransformersCodec(model, num_codebooks=3)
    four.save_pretrained(tmp_path)
    assert load_codec(tmp_path).num_codebooks == 4 and load_codec(tmp_path, num_codebooks=1).num_codebooks == 1
    model.save_pretrained(tmp_path / "plain")  # a folder without the adapter's json: the model's defaults
    assert load_codec(tmp_path / "plain").num_codebooks == 1
    assert TransformersCodec(_tiny_model("mimi"), num_codebooks=1).encode(audio).codes.shape[1] == 1


def test_load_codec_rejects_other_models(tmp_path):
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=16, n_positions=16)).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="'gpt2' model, which is not a speech codec.*encodec, dac, mimi, xcodec"):
        load_codec(tmp_path)
    with pytest.raises(ValueError, match="unsupported codec model type 'gpt2'"):
        TransformersCodec(GPT2LMHeadModel.from_pretrained(tmp_path))


def test_load_codec_returns_an_embedded_codec_as_is(tmp_path):
    from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel

    class ToyCodecConfig(PretrainedConfig):
        model_type = "toy-speech-codec-test"

    class ToyCodec(PreTrainedModel, SpeechCodecMixin):
        config_class = ToyCodecConfig
        sampling_rate, frame_rate, codebook_size, num_codebooks = 16_000, 100.0, 8, 1

        def __init__(self, config):
            super().__init__(config)
            self.scale = torch.nn.Parameter(torch.ones(1))
            self.post_init()

        def _encode(self, waveforms, lengths):
            return (waveforms[:, None, ::160] > 0).long()

        def _decode(self, codes, frame_lengths):
            return codes[:, 0].float().repeat_interleave(160, dim=-1)

    AutoConfig.register(ToyCodecConfig.model_type, ToyCodecConfig)
    AutoModel.register(ToyCodecConfig, ToyCodec)
    ToyCodec(ToyCodecConfig()).save_pretrained(tmp_path)
    codec = load_codec(tmp_path)
    assert type(codec) is ToyCodec and codec.encode(torch.ones(320)).codes.shape == (1, 1, 2)
    with pytest.raises(ValueError, match="only apply to wrapped transformers codecs"):
        load_codec(tmp_path, num_codebooks=2)


@pytest.mark.parametrize("kind", KINDS)
def test_bad_input_raises(codecs, kind):
    codec = codecs[kind]
    with pytest.raises(ValueError, match="empty"):
        codec.encode(torch.zeros(1, 0))
    with pytest.raises(ValueError, match="NaN"):
        codec.encode(torch.tensor([0.1, float("nan"), 0.2] * 20))
    with pytest.raises(ValueError, match="mono"):
        codec.encode(torch.zeros(2, 2, 400))  # stereo [B, 2, T]
    with pytest.raises(ValueError, match="expects 16000 Hz"):
        codec.encode(torch.zeros(400), sampling_rate=24_000)
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 64\)"):
        codec.decode(torch.full((1, codec.num_codebooks, 5), 64))
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 64\)"):
        codec.decode(torch.full((1, codec.num_codebooks, 5), -1))
    with pytest.raises(ValueError, match=f"expected codes \\[batch, {codec.num_codebooks}, frames>0\\]"):
        codec.decode(torch.zeros(1, codec.num_codebooks + 1, 5, dtype=torch.long))


def test_unsupported_configurations():
    chunked = EncodecModel(EncodecConfig(hidden_size=8, num_filters=2, upsampling_ratios=[2], num_lstm_layers=1,
                                         codebook_size=16, chunk_length_s=1.0, overlap=0.01, normalize=True))
    with pytest.raises(ValueError, match="unchunked, unnormalised EnCodec"):
        TransformersCodec(chunked)


def test_moving_the_adapter_drops_mimis_cached_codebooks():
    codec = TransformersCodec(_tiny_model("mimi"))
    codes = codec.encode(_audio(200)[0]).codes
    codebooks = [m for m in codec.model.modules() if hasattr(m, "_embed")]
    assert codebooks and all(m._embed is not None for m in codebooks)  # cached on first use, never refreshed
    codec.to(torch.float64)
    assert all(m._embed is None for m in codebooks)
    assert codec.encode(_audio(200)[0]).codes.shape == codes.shape
