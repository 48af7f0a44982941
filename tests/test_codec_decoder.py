"""USToken-aided decoding: the mel codec's decoder reading USTokens beside its first codebooks, and its training."""

import pytest
import torch

from dualspeechlm.configuration_mel_codec import MelCodecConfig
from dualspeechlm.modeling_dualspeechlm import DualSpeechLMForConditionalGeneration
from dualspeechlm.modeling_mel_codec import MelCodecModel
from dualspeechlm.pipelines_dualspeechlm import save_for_pipelines
from dualspeechlm.processing.corpus import TRAIN_VOICES, synthesize
from dualspeechlm.testing_utils import tiny_random_model_and_processor
from dualspeechlm.training.encoder_cache import codes_fingerprint, weights_fingerprint
from dualspeechlm.training.train_codec_decoder import (
    better_vocoder,
    decoder_items,
    judge_depths,
    random_batch,
    set_codec,
    set_codec_main,
    train_decoder,
)

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(hidden_size=32, latent_size=16, encoder_layers=2, decoder_layers=2, num_quantizers=3, codebook_size=32,
            vocoder_hidden_size=32, vocoder_intermediate_size=64, vocoder_layers=2, ustoken_vocab_size=20)


@pytest.fixture(scope="module")
def speech(speech_engines):
    return [torch.from_numpy(synthesize(text, voice)) for text, voice in (
        ("the quiet horse slept behind the old bridge", TRAIN_VOICES[0]),
        ("anna saw the cat", TRAIN_VOICES[1]),
    )]


def tiny_codec(**overrides) -> MelCodecModel:
    torch.manual_seed(0)
    return MelCodecModel(MelCodecConfig(**{**TINY, **overrides})).eval()


def stand_in_tokens(waveforms, seed: int = 0) -> list[list[int]]:
    """Random USToken ids, one per 640 samples (25 Hz), in place of a USTokenizer's."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(20, (-(-len(w) // 640),), generator=generator).tolist() for w in waveforms]


def test_decoding_reads_the_tokens_and_only_the_first_codebooks(speech):
    codec = tiny_codec()
    with torch.no_grad():  # a random init is near zero: make the tokens' embeddings count
        codec.ustoken_embedding.weight.normal_()
    encoded = codec.encode(speech)
    written = [torch.tensor(t) for t in stand_in_tokens(speech)]
    tokens = torch.nn.utils.rnn.pad_sequence(written, batch_first=True)
    token_lengths = torch.tensor([len(t) for t in written])

    def decode(codes, ids, **kw):
        return codec.decode_mel(codes, encoded.lengths, ids, token_lengths, **kw)

    with torch.no_grad():
        plain = codec.decode_mel(encoded.codes, encoded.lengths)
        assert decode(encoded.codes, tokens, depth=3).shape == plain.shape == (2, 80, encoded.codes.shape[-1])
        assert not torch.allclose(decode(encoded.codes, tokens, depth=3), plain)  # the tokens count
        assert torch.allclose(codec.decode_mel(encoded.codes, encoded.lengths, tokens, token_lengths * 0, depth=3),
                              plain)
        # depth k reads codebooks < k only: the finer ones can be anything
        scrambled = encoded.codes.clone()
        scrambled[:, 1:] = torch.randint(32, scrambled[:, 1:].shape)
        assert torch.equal(decode(scrambled, tokens, depth=1), decode(encoded.codes, tokens, depth=1))
        assert not torch.equal(decode(scrambled, tokens, depth=3), decode(encoded.codes, tokens, depth=3))
        assert torch.equal(decode(scrambled * 0, tokens, depth=0), decode(encoded.codes, tokens, depth=0))
        # per-item depths are each item's own decode
        mixed = decode(encoded.codes, tokens, depth=torch.tensor([0, 2]))
        assert torch.equal(mixed[1], decode(encoded.codes, tokens, depth=2)[1])
        # the config's default depth applies when tokens are given, every codebook without them
        codec.config.ustoken_decode_codebooks = 1
        assert torch.equal(decode(encoded.codes, tokens), decode(encoded.codes, tokens, depth=1))
        codec.config.ustoken_decode_codebooks = None
    # the public decode: batched equals one by one, audio of the codes' length
    out = codec.decode(encoded.codes, encoded.lengths, ustokens=tokens, ustoken_lengths=token_lengths)
    assert out.lengths.tolist() == (encoded.lengths * 320).tolist()
    alone = codec.decode(encoded.codes[1:, :, : encoded.lengths[1]], ustokens=tokens[1:, : token_lengths[1]])
    torch.testing.assert_close(out.waveforms[1, : alone.lengths[0]], alone.waveforms[0], atol=1e-5, rtol=1e-4)


def test_decoding_reads_the_voice_from_the_speaker_embedding(speech):
    codec = tiny_codec(speaker_embedding_size=6)
    with torch.no_grad():
        codec.speaker_projection.weight.normal_()
    encoded = codec.encode(speech)
    tokens = torch.tensor(stand_in_tokens(speech[:1]) * 2)[:, : encoded.codes.shape[-1] // 2]
    voices = torch.randn(2, 6)

    def decode(**kw):
        return codec.decode_mel(encoded.codes, encoded.lengths, tokens, depth=1, **kw)

    with torch.no_grad():
        assert not torch.allclose(decode(speaker_embeddings=voices), decode())  # the voice counts
        assert not torch.allclose(decode(speaker_embeddings=voices)[0], decode(speaker_embeddings=voices.flip(0))[0])
        mixed = decode(speaker_embeddings=torch.stack([voices[0], voices[0]]))  # each item reads its own voice
        assert torch.equal(mixed[0], decode(speaker_embeddings=voices)[0])
        # a zero embedding is no voice (training drops it so)
        assert torch.equal(decode(speaker_embeddings=voices * 0), decode())
    # the public decode: batched equals one by one
    out = codec.decode(encoded.codes, encoded.lengths, ustokens=tokens, speaker_embeddings=voices)
    alone = codec.decode(encoded.codes[1:, :, : encoded.lengths[1]], ustokens=tokens[1:], speaker_embeddings=voices[1])
    torch.testing.assert_close(out.waveforms[1, : alone.lengths[0]], alone.waveforms[0], atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match=r"expected speaker_embeddings \[batch=2, 6\], got shape \(2, 5\)"):
        codec.decode(encoded.codes, encoded.lengths, speaker_embeddings=torch.zeros(2, 5))
    with pytest.raises(ValueError, match="speaker_embeddings contain NaN"):
        codec.decode(encoded.codes, encoded.lengths, speaker_embeddings=torch.full((2, 6), float("nan")))
    with pytest.raises(ValueError, match="does not read speaker embeddings"):
        tiny_codec().decode(encoded.codes, encoded.lengths, speaker_embeddings=voices)


def test_reading_no_codebook_the_speech_lasts_as_long_as_its_tokens(speech):
    codec = tiny_codec(ustoken_decode_codebooks=0)
    codes = codec.encode(speech[1]).codes[..., :3].expand(2, -1, -1)  # AcousticGPT's guess: 3 frames each
    tokens = torch.tensor([[1, 2, 3, 4, 5], [6, 7, 0, 0, 0]])
    out = codec.decode(codes, [3, 2], ustokens=tokens, ustoken_lengths=[5, 2])
    assert out.lengths.tolist() == [10 * 320, 4 * 320] and out.waveforms.shape == (2, 10 * 320)
    assert codec.decode(codes, [3, 2], ustokens=tokens, ustoken_lengths=[5, 0]).lengths.tolist() == [10 * 320, 2 * 320]
    codec.config.ustoken_decode_codebooks = 1  # reading the codes, the codes' frames count
    assert codec.decode(codes, [3, 2], ustokens=tokens, ustoken_lengths=[5, 2]).lengths.tolist() == [3 * 320, 2 * 320]


def test_bad_tokens_are_a_clear_error(speech):
    codec = tiny_codec()
    codes = codec.encode(speech[1]).codes
    with pytest.raises(ValueError, match=r"USTokens must lie in \[0, 20\)"):
        codec.decode(codes, ustokens=torch.full((1, 4), 20))
    with pytest.raises(ValueError, match=r"expected ustokens \[batch=1, tokens>0\]"):
        codec.decode(codes, ustokens=torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="do not fit ustokens"):
        codec.decode(codes, ustokens=torch.zeros(1, 4, dtype=torch.long), ustoken_lengths=[5])
    with pytest.raises(ValueError, match="does not read USTokens"):
        tiny_codec(ustoken_vocab_size=None).decode(codes, ustokens=torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"ustoken_decode_codebooks must lie in \[0, num_quantizers=3\]"):
        MelCodecConfig(**{**TINY, "ustoken_decode_codebooks": 4})


def test_save_and_load_keep_the_token_embedding_and_speaker_projection(speech, tmp_path):
    codec = tiny_codec(ustoken_decode_codebooks=1, speaker_embedding_size=6)
    encoded = codec.encode(speech[0])  # k-means initialises the codebooks before saving
    codec.save_pretrained(tmp_path)
    loaded = MelCodecModel.from_pretrained(tmp_path).eval()
    assert loaded.ustoken_vocab_size == 20 and loaded.config.ustoken_decode_codebooks == 1
    assert torch.equal(loaded.ustoken_embedding.weight, codec.ustoken_embedding.weight)
    assert loaded.speaker_embedding_size == 6
    assert torch.equal(loaded.speaker_projection.weight, codec.speaker_projection.weight)
    tokens, voice = torch.tensor(stand_in_tokens(speech[:1])), torch.randn(1, 6)
    torch.testing.assert_close(loaded.decode(encoded.codes, ustokens=tokens, speaker_embeddings=voice).waveforms,
                               codec.decode(encoded.codes, ustokens=tokens, speaker_embeddings=voice).waveforms,
                               atol=1e-5, rtol=1e-4)


def test_training_lowers_the_loss_and_leaves_the_codes_alone(speech):
    codec = tiny_codec(ustoken_vocab_size=32, speaker_embedding_size=6)
    # content-bearing stand-in USTokens: codebook 0 of every other frame (25 Hz)
    encoded, frame_lengths = codec.encode(speech).to_tuple()
    tokens = [codes[0, :n:2].tolist() for codes, n in zip(encoded, frame_lengths)]
    items = decoder_items(codec, speech, tokens, speakers=torch.randn(2, 6))
    # each item's frames: its tokens' 2 per token, but never past its audio (an odd frame count ends half a token)
    assert [item.codes.shape[-1] for item in items] == [min(2 * len(t), int(n)) for t, n in zip(tokens, frame_lengths)]
    generator = torch.Generator().manual_seed(0)
    batch = random_batch(items, 4, 10, 2, generator)
    assert batch.codes.shape == (4, 3, 20) and batch.log_mels.shape == (4, 80, 20) and batch.ustokens.shape == (4, 10)
    assert torch.equal(batch.frame_lengths, 2 * batch.ustoken_lengths) and batch.speakers.shape == (4, 6)
    assert all(any(torch.equal(voice, item.speaker) for item in items) for voice in batch.speakers)

    def loss() -> float:
        with torch.no_grad():
            decoded = codec.decode_mel(batch.codes, batch.frame_lengths, batch.ustokens, batch.ustoken_lengths,
                                       depth=0, speaker_embeddings=batch.speakers)
            return codec.mel_l1(decoded, batch.log_mels, batch.frame_lengths).item()

    trained = ("decoder.", "ustoken_embedding.", "speaker_projection.")
    frozen = {k: v.clone() for k, v in codec.state_dict().items() if not k.startswith(trained)}
    projection = codec.speaker_projection.weight.clone()
    before_codes = codec.encode(speech).codes
    before_fingerprints = codes_fingerprint(codec), weights_fingerprint(codec)
    before = loss()
    losses = train_decoder(codec, items, 200, 4, 1e-2, generator, tokens_per_crop=10)
    after = loss()
    assert len(losses) == 200 and after < 0.7 * before  # the tokens and the voice (depth 0) now render the mel
    assert not torch.equal(codec.speaker_projection.weight, projection)
    assert all(torch.equal(frozen[k], v) for k, v in codec.state_dict().items() if k in frozen)
    assert torch.equal(codec.encode(speech).codes, before_codes) and not codec.training
    # so the token caches (keyed by the codes' fingerprint) and a model trained on the codes stay valid
    assert codes_fingerprint(codec) == before_fingerprints[0] and weights_fingerprint(codec) != before_fingerprints[1]


class HearsOnlySound:
    """A stand-in judge: hears `text` in any audio that is not silent, nothing in silence."""

    def __init__(self, text: str):
        self.text = text

    def transcribe(self, waveforms, sampling_rate: int) -> list[str]:
        return [self.text if abs(waveform).max() > 0 else "" for waveform in waveforms]


def test_the_decoder_keeps_the_vocoder_that_renders_the_token_decoding_better(speech, monkeypatch):
    codec = tiny_codec(speaker_embedding_size=6)
    assert codec.config.vocoder == "neural"
    items = decoder_items(codec, speech, stand_in_tokens(speech), speakers=torch.randn(2, 6))
    texts = ["the words", "the words"]
    judges = {"hears sound": HearsOnlySound("the words")}
    report = judge_depths(codec, items, texts, judges, batch_size=1)
    assert list(report) == ["codes only, neural", "USTokens + speaker + 0 codebook(s), neural",
                            "USTokens + speaker + 0 codebook(s), griffin_lim",
                            "USTokens + speaker + 3 codebook(s), neural"]
    assert all(scores == {"hears sound": 0.0} for scores in report.values())
    # a neural vocoder that renders silence loses to Griffin-Lim on the token decoding
    monkeypatch.setattr(codec.vocoder, "forward", lambda log_mel, frames, magnitude: torch.zeros(
        log_mel.shape[0], log_mel.shape[-1] * codec.config.hop_length))
    silent = judge_depths(codec, items, texts, judges)
    assert silent["USTokens + speaker + 0 codebook(s), neural"] == {"hears sound": 1.0}
    assert silent["USTokens + speaker + 0 codebook(s), griffin_lim"] == {"hears sound": 0.0}
    assert better_vocoder(codec, {"test": silent, "test_unseen_voice": silent}) == "griffin_lim"
    assert better_vocoder(codec, {"test": report}) == "neural"  # a tie keeps the codec's


def test_set_codec_gives_a_model_folder_a_new_decoder_only_when_the_codes_stay(tmp_path):
    model, processor = tiny_random_model_and_processor()
    save_for_pipelines(model, processor, tmp_path / "model")
    plain = model.codec_model
    reading = MelCodecModel(MelCodecConfig(**{**plain.config.to_dict(), "ustoken_vocab_size": 32}))
    reading.load_state_dict(plain.state_dict(), strict=False)  # the same encoder and codebooks, a new token table
    with torch.no_grad():
        reading.decoder.output.weight.mul_(2.0)  # ... and another decoder
    reading.save_pretrained(tmp_path / "reading")
    set_codec_main(["--model", str(tmp_path / "model"), "--codec", str(tmp_path / "reading")])
    loaded = DualSpeechLMForConditionalGeneration.from_pretrained(tmp_path / "model")
    assert loaded.codec_model.ustoken_vocab_size == 32
    assert torch.equal(loaded.codec_model.decoder.output.weight, reading.decoder.output.weight)
    assert codes_fingerprint(loaded.codec_model) == codes_fingerprint(plain)
    llm = model.language_model.state_dict()  # the rest of the model as it was
    assert all(torch.equal(value, llm[name]) for name, value in loaded.language_model.state_dict().items())

    torch.manual_seed(1)
    MelCodecModel(plain.config).save_pretrained(tmp_path / "other")  # other codebooks: other codes
    with pytest.raises(ValueError, match="encodes differently"):
        set_codec(tmp_path / "model", tmp_path / "other")
    kept = DualSpeechLMForConditionalGeneration.from_pretrained(tmp_path / "model").codec_model
    assert kept.ustoken_vocab_size == 32  # left as it was
