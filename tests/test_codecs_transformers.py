"""`TransformersCodec` and `load_codec` on tiny random EnCodec, DAC, Mimi, X-Codec, WavTokenizer, Xcodec2 and NeuCodec
models (CPU). The adapters take and give 16 kHz audio; the tiny WavTokenizer runs at 24 kHz, like the real one, and the
tiny NeuCodec decodes to 24 kHz, so the resampling inside is exercised too.

Random codec models quantize everything to one code (VQ codebooks start at zero, FSQ rounds tiny projections to
the middle level), so each tiny model's codebooks or projections are spread out first; the tests check that codes
really vary.
"""

import json
import math

import pytest
import torch
import torchaudio
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
    NeuCodecConfig,
    NeuCodecFeatureExtractor,
    NeuCodecModel,
    Wav2Vec2BertConfig,
    WavTokenizerConfig,
    WavTokenizerModel,
    Xcodec2Config,
    Xcodec2FeatureExtractor,
    Xcodec2Model,
    XcodecConfig,
    XcodecModel,
)

from dualspeechlm.codec_auto import SUPPORTED_TRANSFORMERS_CODECS, load_codec
from dualspeechlm.codecs import SpeechCodecMixin
from dualspeechlm.configuration_dualspeechlm import DualSpeechLMConfig
from dualspeechlm.modeling_dualspeechlm import DualSpeechLMForConditionalGeneration
from dualspeechlm.transformers_codecs import TransformersCodec

KINDS = ["encodec", "dac", "mimi", "xcodec", "wavtokenizer", "xcodec2", "neucodec"]
SINGLE_CODEBOOK = ["wavtokenizer", "xcodec2", "neucodec"]
CODEBOOKS = {"encodec": 2, "dac": 3, "mimi": 4, "xcodec": 2, "wavtokenizer": 1, "xcodec2": 1, "neucodec": 1}
# encodec: 12 kbps of [6, 12, 24]; xcodec2 / neucodec: FSQ with 8 dimensions of 4 levels, 4^8 codes, as released
CODEBOOK_SIZE = {**{kind: 64 for kind in KINDS}, "xcodec2": 65_536, "neucodec": 65_536}
# samples per code frame at 16 kHz (wavtokenizer: 24 at its 24 kHz; xcodec2 / neucodec: the released 320, which
# their semantic features fix)
HOP = {"encodec": 16, "dac": 8, "mimi": 16, "xcodec": 8, "wavtokenizer": 16, "xcodec2": 320, "neucodec": 320}
MODEL_RATES = {kind: (16_000, 16_000) for kind in KINDS} | {"wavtokenizer": (24_000, 24_000),
                                                           "neucodec": (16_000, 24_000)}  # (encoder in, decoder out)

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
# X-Codec runs per item by default (its HuBERT attends over the whole padded input), and so do WavTokenizer, Xcodec2
# and NeuCodec (their decoders attend / group-norm over the whole padded sequence), hence exact.
BATCH_TAIL = {kind: (0, 0) for kind in KINDS} | {"dac": (18, 19)}  # (encode, decode) frames


def _lengths(kind: str, *lengths: int) -> list[int]:
    """Test lengths in samples, scaled from hop 16 to the kind's hop (x20 for the 320-sample hops)."""
    return [n * max(1, HOP[kind] // 16) for n in lengths]


def _tiny_mel_codec(kind: str, **overrides):
    """Xcodec2 / NeuCodec with a 1-layer, 16-wide w2v-BERT as semantic encoder (random, like the rest)."""
    semantic = Wav2Vec2BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                  conv_depthwise_kernel_size=3)
    # 64 wide: the decoder's ResNet blocks group-norm in 32 groups, which need 2 values for a 1-frame item;
    # quantization_dim: acoustic + semantic widths
    sizes = dict(hidden_size=64, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                 num_key_value_heads=2, head_dim=32, encoder_hidden_size=2, quantization_dim=80,
                 semantic_model_config=semantic) | overrides
    return Xcodec2Model(Xcodec2Config(**sizes)) if kind == "xcodec2" else NeuCodecModel(NeuCodecConfig(**sizes))


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
    elif kind == "xcodec":
        # HuBERT's feature convs (kernels 6, 2; strides 4, 2) must hop like the acoustic DAC ([4, 2] = 8)
        hubert = HubertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                              conv_dim=(8, 8), conv_stride=(4, 2), conv_kernel=(6, 2), num_conv_pos_embeddings=4,
                              num_conv_pos_embedding_groups=2)
        dac = dict(encoder_hidden_size=4, downsampling_ratios=[4, 2], upsampling_ratios=[4, 2], decoder_hidden_size=16,
                   codebook_dim=4, codebook_size=64, n_codebooks=2)
        config = XcodecConfig(sample_rate=16_000, codebook_size=64, target_bandwidths=[12.0, 24.0],
                              acoustic_model_config=dac, semantic_model_config=hubert)
        model = XcodecModel(config)
    elif kind == "wavtokenizer":  # 24 kHz like the real one; hop 6 x 4 = 24 samples there, 16 at 16 kHz
        config = WavTokenizerConfig(sampling_rate=24_000, num_filters=4, upsampling_ratios=[6, 4], num_lstm_layers=1,
                                    hidden_size=8, codebook_dim=8, codebook_size=64, decoder_hidden_size=16,
                                    decoder_intermediate_size=32, decoder_num_layers=1, decoder_attention_num_groups=4)
        model = WavTokenizerModel(config)
    else:
        model = _tiny_mel_codec(kind)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        if kind in ("encodec", "wavtokenizer"):  # latents far from 0, little spread: seed codebook 0 with real ones
            encoder = model.encoder if kind == "encodec" else model.encoder_model.encoder
            layers = model.quantizer.layers if kind == "encodec" else [model.encoder_model.quantizer]
            latents = encoder(torch.randn(1, 1, 4096, generator=generator) * 0.3)[0].T
            for i, layer in enumerate(layers):
                noise = torch.randn(layer.codebook.embed.shape, generator=generator) * latents.std(0)
                layer.codebook.embed.copy_(latents[torch.randperm(len(latents), generator=generator)[:64]] + noise
                                           if i == 0 else noise * 0.3)
        elif kind in ("xcodec2", "neucodec"):  # FSQ's codebook is fixed: scale its input projection to spread ~1.5
            projected = {}
            hook = model.quantizer.project_in.register_forward_hook(
                lambda module, args, out: projected.update(out=out))
            TransformersCodec(model).encode(torch.randn(4000, generator=generator) * 0.3)
            hook.remove()
            model.quantizer.project_in.weight.mul_(1.5 / projected["out"].std())
        for name, buffer in model.named_buffers():
            if kind not in ("encodec", "wavtokenizer") and name.endswith(("codebook.embed", "codebook.embed_sum")):
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
    assert (codec.sampling_rate, codec.codebook_size, codec.num_codebooks) == (16_000, CODEBOOK_SIZE[kind],
                                                                               CODEBOOKS[kind])
    assert (codec.model_sampling_rate, codec.model_output_sampling_rate) == MODEL_RATES[kind]
    assert codec.frame_rate == 16_000 / HOP[kind] and codec.device == torch.device("cpu")
    codec.train()  # e.g. from a parent module: the wrapped codec must stay in eval mode
    assert codec.training and not codec.model.training
    codec.eval()


@pytest.mark.parametrize("kind", KINDS)
def test_encode_shapes_and_lengths(codecs, kind):
    codec = codecs[kind]
    lengths = _lengths(kind, 403, 250, 9)
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
    lengths = _lengths(kind, 403, 250, 9)
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
    audio = _audio(*_lengths(kind, 403, 250, 241), seed=1)
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
    codes = codec.encode(_audio(*_lengths(kind, 403, 250), seed=2))
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
    settings = lambda c: (c.num_codebooks, c.per_item, c.sampling_rate, c.model_sampling_rate,  # noqa: E731
                          c.model_output_sampling_rate, c.frame_rate, c.codebook_size)
    assert settings(loaded) == settings(codec)
    audio = _audio(*_lengths(kind, 403, 250), seed=3)
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
    with pytest.raises(ValueError, match="'gpt2' model, which is not a speech codec.*encodec, dac, mimi, xcodec, "
                                         "wavtokenizer, xcodec2, neucodec"):
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
    size = CODEBOOK_SIZE[kind]
    with pytest.raises(ValueError, match=rf"codes must lie in \[0, {size}\)"):
        codec.decode(torch.full((1, codec.num_codebooks, 5), size))
    with pytest.raises(ValueError, match=rf"codes must lie in \[0, {size}\)"):
        codec.decode(torch.full((1, codec.num_codebooks, 5), -1))
    with pytest.raises(ValueError, match=f"expected codes \\[batch, {codec.num_codebooks}, frames>0\\]"):
        codec.decode(torch.zeros(1, codec.num_codebooks + 1, 5, dtype=torch.long))


def test_unsupported_configurations():
    chunked = EncodecModel(EncodecConfig(hidden_size=8, num_filters=2, upsampling_ratios=[2], num_lstm_layers=1,
                                         codebook_size=16, chunk_length_s=1.0, overlap=0.01, normalize=True))
    with pytest.raises(ValueError, match="unchunked, unnormalised EnCodec"):
        TransformersCodec(chunked)
    # Xcodec2 / NeuCodec: one code per pair of 160-sample log-mel frames, so the acoustic hop must be 320
    for kind in ("xcodec2", "neucodec"):
        with pytest.raises(ValueError, match=f"{kind}'s acoustic encoder hops 160 samples per code, but its semantic "
                                             "features come every 320"):
            TransformersCodec(_tiny_mel_codec(kind, downsampling_ratios=[2, 4, 4, 5]))


@pytest.mark.parametrize("kind", SINGLE_CODEBOOK)
def test_single_codebook_decoders_need_per_item(codecs, kind):
    codec = codecs[kind]
    assert codec.per_item and codec.encode_kwargs == {}
    with pytest.raises(ValueError, match=r"cannot encode with 2 codebooks; choose one of \[1\]"):
        TransformersCodec(codec.model, num_codebooks=2)
    # decoded in one padded batch, even the first frames of the shorter item change (attention, GroupNorm over time)
    codes = codec.encode(_audio(*_lengths(kind, 403, 250), seed=4))
    batched = TransformersCodec(codec.model, per_item=False).decode(codes.codes, codes.lengths).waveforms[1]
    alone = codec.decode(codes.codes[1:, :, : codes.lengths[1]]).waveforms[0]
    early = 4 * HOP[kind]
    assert not torch.allclose(batched[:early], alone[:early], rtol=0, atol=1e-3 * alone.abs().max())


def test_wavtokenizer_resamples_inside(codecs, tmp_path):
    """At 16 kHz the 24 kHz WavTokenizer gives what it gives at its own rate on audio resampled outside."""
    codec = codecs["wavtokenizer"]
    native = TransformersCodec(codec.model, sampling_rate=24_000)
    assert (native.sampling_rate, native.frame_rate) == (24_000, codec.frame_rate)
    audio = _audio(403, seed=5)[0]
    codes = codec.encode(audio)
    assert torch.equal(codes.codes, native.encode(torchaudio.functional.resample(audio, 16_000, 24_000)).codes)
    wave, wave_24khz = codec.decode(codes.codes).waveforms[0], native.decode(codes.codes).waveforms[0]
    assert (len(wave), len(wave_24khz)) == (16 * codes.lengths[0], 24 * codes.lengths[0])
    torch.testing.assert_close(wave, torchaudio.functional.resample(wave_24khz, 24_000, 16_000))
    with pytest.raises(ValueError, match="audio is at 16000 Hz but this codec expects 24000 Hz"):
        native.encode(audio, sampling_rate=16_000)
    # the adapter's rate is saved with it; a folder without the adapter's json means 16 kHz
    native.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "dualspeechlm_codec.json").read_text())["sampling_rate"] == 24_000
    assert load_codec(tmp_path).sampling_rate == 24_000
    assert load_codec(tmp_path, sampling_rate=16_000).sampling_rate == 16_000
    codec.model.save_pretrained(tmp_path / "plain")
    assert load_codec(tmp_path / "plain").sampling_rate == 16_000


class _ConfigOnly(torch.nn.Module):
    """A stand-in model holding just a config: what the adapter reports needs no weights."""

    def __init__(self, config):
        super().__init__()
        self.config = config


@pytest.mark.parametrize("config_class, rates, frame_rate, codebook_size", [
    (WavTokenizerConfig, (24_000, 24_000), 40.0, 4096),
    (Xcodec2Config, (16_000, 16_000), 50.0, 65_536),
    (NeuCodecConfig, (16_000, 24_000), 50.0, 65_536),
])
def test_released_configurations(config_class, rates, frame_rate, codebook_size):
    """The default configs (those of the released checkpoints): the paper's WavTokenizer codes 24 kHz audio at 40
    codes/s from 4,096, Xcodec2 / NeuCodec 16 kHz audio at 50 codes/s from 65,536 (NeuCodec decoding to 24 kHz)."""
    codec = TransformersCodec(_ConfigOnly(config_class()))
    assert (codec.sampling_rate, codec.model_sampling_rate, codec.model_output_sampling_rate) == (16_000, *rates)
    assert (codec.frame_rate, codec.codebook_size, codec.num_codebooks) == (frame_rate, codebook_size, 1)
    assert codec.frames_for(16_000) == frame_rate and codec.samples_for(1) == 16_000 / frame_rate


@pytest.mark.parametrize("kind", ["xcodec2", "neucodec"])
def test_xcodec2_and_neucodec_codes_come_from_their_feature_extractors(codecs, kind):
    """The semantic branch reads transformers' own log-mel features: the codes equal the model's on its extractor's
    output (NeuCodec's on the item zero-padded to whole frames), for audio ending inside a frame and on a frame."""
    codec = codecs[kind]
    extractor = Xcodec2FeatureExtractor() if kind == "xcodec2" else NeuCodecFeatureExtractor()
    for audio in _audio(4820, 4800, seed=6):
        frames = math.ceil(len(audio) / 320)
        item = audio if kind == "xcodec2" else torch.nn.functional.pad(audio, (0, frames * 320 - len(audio)))
        reference = codec.model.encode(**extractor(item, sampling_rate=16_000, return_tensors="pt")).audio_codes
        assert torch.equal(codec.encode(audio).codes[0], reference[0, :, :frames].long())
    if kind == "neucodec":  # unpadded, NeuCodec drops the trailing partial frame (hence the padding)
        raw = codec.model.encode(**extractor(_audio(4820)[0], sampling_rate=16_000, return_tensors="pt"))
        assert raw.audio_codes.shape[-1] == 4820 // 320 == math.ceil(4820 / 320) - 1


def test_moving_the_adapter_drops_mimis_cached_codebooks():
    codec = TransformersCodec(_tiny_model("mimi"))
    codes = codec.encode(_audio(200)[0]).codes
    codebooks = [m for m in codec.model.modules() if hasattr(m, "_embed")]
    assert codebooks and all(m._embed is not None for m in codebooks)  # cached on first use, never refreshed
    codec.to(torch.float64)
    assert all(m._embed is None for m in codebooks)
    assert codec.encode(_audio(200)[0]).codes.shape == codes.shape


@pytest.mark.parametrize("kind", ["encodec", *SINGLE_CODEBOOK])
def test_a_transformers_codec_speaks_as_the_models_sub_model(codecs, kind, tmp_path):
    """The codec inside DualSpeechLM (`codec_config` + `codec_model`): saved in the model's weights, rebuilt from its
    config on load (wrapped again, its codebook count and rate kept), and decoding what AcousticGPT writes."""
    codec = codecs[kind]
    torch.manual_seed(0)
    model = DualSpeechLMForConditionalGeneration(DualSpeechLMConfig.tiny(**DualSpeechLMConfig.codec_kwargs(codec)))
    model.set_codec(codec)
    assert model.config.codec_config.model_type == kind and model.codec_model is codec
    model.save_pretrained(tmp_path)
    loaded = DualSpeechLMForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert type(loaded.codec_model) is TransformersCodec and loaded.codec_model.num_codebooks == CODEBOOKS[kind]
    expected = model.state_dict()
    assert all(torch.equal(value, expected[name]) for name, value in loaded.state_dict().items())
    ids = torch.tensor([[3, 4, 5, 6]])
    speech = [m.eval().generate(ids, output_audio=True, max_new_tokens=3, acoustic_max_new_tokens=4,
                                do_sample=False, acoustic_do_sample=False) for m in (model, loaded)]
    assert torch.equal(speech[0].codes, speech[1].codes)
    torch.testing.assert_close(speech[1].waveforms, speech[0].waveforms)
    assert torch.equal(speech[0].waveform_lengths, codec.samples_for(speech[0].code_lengths))
