"""GPU smoke test: the library's models on a CUDA device, checked against the same weights on the CPU.

    python bench/gpu_smoke.py --device cuda --out gpu_smoke.md
    python bench/gpu_smoke.py --device cpu      # the same checks, the "device" being the CPU (runs anywhere)

Tiny random models: a USTokenizer of `USTokenizerConfig.tiny()` (Whisper tiny.en shapes), and the tests' tiny
DualSpeechLM (`dualspeechlm.testing_utils`: built as stage 3 builds it, `from_text_model` on a 1-layer Llama with a
BPE tokenizer trained on a few sentences, a tiny AcousticGPT, a 2-quantizer mel codec with Griffin-Lim; dropout off).
Each check builds its reference on the CPU, copies the model to `--device` and compares; fp32 comparisons run with
TF32 off.

    ustokenizer_encode       `encode` of 2 random waveforms (1.3 s, 2 s) via the feature extractor: same ids and lengths
    ustokenizer_bf16         `encode` under torch.autocast(bfloat16): runs, same shape (agreement with fp32 reported)
    dualspeechlm_train_fp32  forward loss (4 mixed-task items, CoC modes fixed) = CPU loss (rel 1e-4), backward, one
                             AdamW step, the loss after it = CPU's again
    dualspeechlm_train_bf16  the same step under bf16 autocast: finite losses, the weights move
    dualspeechlm_text        greedy `generate()` of text answers (left-padded ASR / SQA prompts) = CPU's
    dualspeechlm_speech      greedy `generate_speech()` of 2 left-padded TTS prompts (USTokens, then AcousticGPT codes;
                             an untrained model writes every allowed one) = CPU's, and it runs under bf16 autocast
    dualspeechlm_speech_preset  `generate_speech` as the tiny preset speaks: 8 beams, guidance 2 on the spoken text, a
                             USToken-reading codec with the voice and the neural vocoder = CPU's tokens and waveforms
    codec_decode             `decode_codes` (how `generate_speech` / `render_speech` with `codec=` end) with the codec,
                             codes and lengths on the device = CPU's waveforms (rel 5e-2: Griffin-Lim)
    trainer_step             one HF Trainer step of stage 3's trainer, sampler and collator (bf16 on CUDA)

Prints a Markdown table (check, result, seconds, peak CUDA memory), writes it to `--out` when given, and exits 1 when
a check fails (each failure's traceback is printed; the other checks still run).
"""

from __future__ import annotations

import argparse
import copy
import functools
import os
import sys
import tempfile
import time
import traceback

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import TrainingArguments  # noqa: E402

from dualspeechlm.codecs.configuration_mel_codec import MelCodecConfig  # noqa: E402
from dualspeechlm.codecs.modeling_mel_codec import MelCodecModel  # noqa: E402
from dualspeechlm.configuration_ustokenizer import USTokenizerConfig  # noqa: E402
from dualspeechlm.feature_extraction_ustokenizer import USTokenizerFeatureExtractor  # noqa: E402
from dualspeechlm.modeling_ustokenizer import USTokenizerModel  # noqa: E402
from dualspeechlm.tasks import build_inputs  # noqa: E402
from dualspeechlm.testing_utils import tiny_random_model_and_processor, without_dropout  # noqa: E402
from dualspeechlm.training.multitask import DualSpeechLMCollator, TaskBatchSampler  # noqa: E402
from dualspeechlm.training.trainer import BatchSamplerTrainer  # noqa: E402

CPU = torch.device("cpu")
NUM_SPEECH_TOKENS = 16


def expect(condition, message: str) -> None:
    """An assertion that `python -O` keeps."""
    if not condition:
        raise AssertionError(message)


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().float().cpu(), b.detach().float().cpu()
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-12))


def on(device: torch.device, model):
    """A copy of `model` on `device` (the CPU original stays the reference)."""
    return copy.deepcopy(model).to(device)


def to_device(batch: dict, device: torch.device) -> dict:
    return {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in batch.items()}


# ---- the tiny parts ----


@functools.cache
def ustokenizer_inputs():
    """(USTokenizer of the tiny preset, features of 2 random waveforms of 1.3 s and 2 s) on the CPU."""
    torch.manual_seed(0)
    model = USTokenizerModel(USTokenizerConfig.tiny()).eval()
    rng = np.random.default_rng(0)
    audio = [rng.normal(0, 0.1, int(seconds * 16000)).astype(np.float32) for seconds in (1.3, 2.0)]
    features = USTokenizerFeatureExtractor()(audio, sampling_rate=16000, return_tensors="pt")
    return model, dict(features)


def examples(codebook_size: int) -> list[dict]:
    """Stage 3 examples (what training/multitask.py makes of cached corpus rows): 2 understanding, 2 TTS items."""
    rng = np.random.default_rng(0)

    def target(frames: int) -> dict:
        return {"answer_speech_ids": rng.integers(0, NUM_SPEECH_TOKENS, frames // 2 + 1).tolist(),
                "codes": rng.integers(0, codebook_size, (2, frames)), "speaker": rng.normal(size=512).astype(np.float32)}

    return [
        {"task": "asr", "speech_ids": [3, 1, 4, 1, 5], "answer": "anna saw the cat"},
        {"task": "tts", "text": "the cat", **target(3)},
        {"task": "sqa", "speech_ids": [2, 7], "question": "who saw the cat?", "answer": "anna"},
        {"task": "tts", "text": "the dog sleeps on the warm mat", **target(7)},
    ]


def dualspeechlm_parts():
    """(text tokenizer, DualSpeechLM, mel codec): the library's tiny random parts (`dualspeechlm.testing_utils`, as the
    tests use them), fresh and on the CPU, without dropout (train-mode losses are compared across devices)."""
    model, processor = tiny_random_model_and_processor(num_speech_tokens=NUM_SPEECH_TOKENS)
    return processor.tokenizer, without_dropout(model), processor.codec


# ---- the checks: each returns a short detail, or raises ----


def check_ustokenizer_encode(device: torch.device) -> str:
    """USTokenizer `encode` on the device gives the CPU's ids and lengths."""
    model, features = ustokenizer_inputs()
    expected = model.encode(**features)
    got = on(device, model).encode(**to_device(features, device))
    expect(got.ids.device.type == device.type, f"ids came back on {got.ids.device}")
    expect(torch.equal(got.lengths.cpu(), expected.lengths), f"lengths {got.lengths.tolist()} != {expected.lengths.tolist()}")
    mismatches = int((got.ids.cpu() != expected.ids).sum())
    expect(mismatches == 0, f"{mismatches} of {expected.ids.numel()} ids differ from the CPU's")
    return f"{expected.ids.numel()} ids equal (lengths {expected.lengths.tolist()})"


def check_ustokenizer_bf16(device: torch.device) -> str:
    """USTokenizer `encode` under bf16 autocast runs (the VQ stays fp32); reports agreement with fp32."""
    model, features = ustokenizer_inputs()
    device_model, inputs = on(device, model), to_device(features, device)
    fp32 = device_model.encode(**inputs)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        bf16 = device_model.encode(**inputs)
    expect(bf16.ids.shape == fp32.ids.shape and torch.equal(bf16.lengths, fp32.lengths), "shape or lengths changed")
    valid = fp32.ids != model.config.ids_pad_value
    expect(bool(((bf16.ids >= 0) == valid).all()), "padding moved under autocast")
    agree = float((bf16.ids == fp32.ids)[valid].float().mean())
    return f"runs; {agree:.0%} of ids as in fp32"


def train_step(model, batch: dict, autocast: bool) -> tuple[torch.Tensor, torch.Tensor, torch.nn.Module]:
    """One AdamW step in train mode, the CoC modes of the two TTS items fixed -> (loss before, loss after, model)."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    device_type = next(model.parameters()).device.type

    def loss() -> torch.Tensor:
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=autocast):
            return model(**batch, coc_modes=["both", "prompt", "both", "target"]).loss

    before = loss()
    before.backward()
    optimizer.step()
    return before.detach(), loss().detach(), model


def mixed_batch(tokenizer, model) -> dict:
    return DualSpeechLMCollator(tokenizer, model.config)(examples(model.config.codebook_size))


def check_dualspeechlm_train_fp32(device: torch.device) -> str:
    """DualSpeechLM fp32 forward loss, and the loss after one AdamW step, equal the CPU's (rel 1e-4)."""
    tokenizer, model, _ = dualspeechlm_parts()
    batch = mixed_batch(tokenizer, model)
    expected = train_step(on(CPU, model), batch, autocast=False)
    got = train_step(on(device, model), to_device(batch, device), autocast=False)
    for name, index in (("loss", 0), ("loss after a step", 1)):
        difference = relative_difference(got[index], expected[index])
        expect(difference <= 1e-4, f"{name} {got[index].item():.6f} vs CPU {expected[index].item():.6f} (rel {difference:.1e})")
    expect(got[1] < got[0], "one step did not lower the loss")
    return f"loss {expected[0].item():.4f} -> {expected[1].item():.4f}, as on CPU"


def check_dualspeechlm_train_bf16(device: torch.device) -> str:
    """A DualSpeechLM training step under bf16 autocast: finite losses, and the weights change."""
    tokenizer, model, _ = dualspeechlm_parts()
    device_model = on(device, model)
    before = [p.detach().clone() for p in device_model.parameters()]
    first, second, trained = train_step(device_model, to_device(mixed_batch(tokenizer, model), device), autocast=True)
    expect(bool(torch.isfinite(first) & torch.isfinite(second)), f"losses {first.item()}, {second.item()}")
    moved = sum(not torch.equal(old, new) for old, new in zip(before, trained.parameters()))
    expect(moved > 0, "no weight changed")
    return f"loss {first.item():.4f} -> {second.item():.4f}; {moved} tensors updated"


def check_dualspeechlm_text(device: torch.device) -> str:
    """Greedy text generation for left-padded understanding prompts equals the CPU's."""
    tokenizer, model, _ = dualspeechlm_parts()
    prompts = build_inputs(tokenizer, model.config, examples(model.config.codebook_size)[0::2], with_answers=False,
                           padding_side="left")
    settings = dict(max_new_tokens=8, do_sample=False)
    expected = model.generate(prompts["input_ids"], attention_mask=prompts["attention_mask"], **settings)
    got = on(device, model).generate(prompts["input_ids"].to(device), attention_mask=prompts["attention_mask"].to(device),
                                     **settings)
    expect(torch.equal(got.cpu(), expected), f"device wrote {got[:, -8:].tolist()}, CPU {expected[:, -8:].tolist()}")
    return f"{expected.shape[0]} x {expected.shape[1] - prompts['input_ids'].shape[1]} tokens equal"


def speak(model, prompts: dict, speakers: torch.Tensor, device: torch.device, autocast: bool = False, **settings):
    """Greedy `generate_speech` (USTokens, then AcousticGPT codes) of `prompts` on `device`, at most 8 USTokens and 12
    code frames; `settings`: more of its arguments (tensors are moved to `device`), e.g. `codec`, `num_beams`."""
    settings = {"do_sample": False, "max_new_tokens": 8, "acoustic_do_sample": False, "acoustic_max_new_tokens": 12,
                **to_device(settings, device)}
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        return model.generate_speech(prompts["input_ids"].to(device), prompts["attention_mask"].to(device),
                                     speaker_embeddings=speakers.to(device), **settings)


def check_dualspeechlm_speech(device: torch.device) -> str:
    """Greedy speech generation (USTokens + AcousticGPT codes) equals the CPU's, and runs under bf16 autocast."""
    tokenizer, model, _ = dualspeechlm_parts()
    tts = [example for example in examples(model.config.codebook_size) if example["task"] == "tts"]
    prompts = build_inputs(tokenizer, model.config, tts, with_answers=False, padding_side="left")
    speakers = torch.from_numpy(np.stack([example["speaker"] for example in tts]))
    expected = speak(model, prompts, speakers, CPU)
    device_model = on(device, model)
    got = speak(device_model, prompts, speakers, device)
    for name in ("sequences", "codes", "code_lengths"):
        expect(torch.equal(got[name].cpu(), expected[name]), f"{name}: {got[name].tolist()} vs CPU {expected[name].tolist()}")
    bf16 = speak(device_model, prompts, speakers, device, autocast=True)
    expect(bf16.codes.shape[:2] == expected.codes.shape[:2], f"bf16 codes of shape {list(bf16.codes.shape)}")
    ustokens = model.config.is_speech_token(expected.sequences[:, prompts["input_ids"].shape[1]:]).sum(-1).tolist()
    return f"{ustokens} USTokens, {expected.code_lengths.tolist()} frames equal; bf16 runs"


def ustoken_reading_codec(config) -> MelCodecModel:
    """A tiny random codec that renders USTokens and the voice alone (`decodes_ustokens_alone`) through its neural
    vocoder, as the main job's USToken decoder does; code shapes as the tiny model's codec."""
    torch.manual_seed(0)
    return MelCodecModel(MelCodecConfig(
        hidden_size=16, latent_size=8, encoder_layers=1, decoder_layers=1, num_quantizers=config.num_codebooks,
        codebook_size=config.codebook_size, vocoder="neural", vocoder_hidden_size=16, vocoder_intermediate_size=32,
        vocoder_layers=1, ustoken_vocab_size=config.num_speech_tokens, ustoken_decode_codebooks=0,
        speaker_embedding_size=config.speaker_embedding_size)).eval()


def check_dualspeechlm_speech_preset(device: torch.device) -> str:
    """Speech as the tiny preset writes it (USTokens by beam search, 8 beams; at least 6 of them, which an untrained
    model would not write), under classifier-free guidance on the spoken text (scale 2: a second KV cache that
    follows the beams), rendered by a codec that decodes the USTokens and the voice alone with its neural vocoder:
    the CPU's sequences and lengths, waveforms to rel 1e-3."""
    tokenizer, model, _ = dualspeechlm_parts()
    with torch.no_grad():  # at init the tokens' logits lie within rounding of each other, and beams would follow it
        torch.manual_seed(0)
        model.get_output_embeddings().weight.normal_(std=1.0)
    codec = ustoken_reading_codec(model.config)
    tts = [example for example in examples(model.config.codebook_size) if example["task"] == "tts"]
    prompts = build_inputs(tokenizer, model.config, tts, with_answers=False, padding_side="left")
    speakers = torch.from_numpy(np.stack([example["speaker"] for example in tts]))
    preset = dict(condition_mask=prompts["condition_mask"], spoken_text_mask=prompts["spoken_text_mask"], num_beams=8,
                  guidance_scale=2.0, min_new_tokens=6)
    expected = speak(model, prompts, speakers, CPU, codec=codec, **preset)
    got = speak(on(device, model), prompts, speakers, device, codec=on(device, codec), **preset)
    for name in ("sequences", "ustoken_lengths", "waveform_lengths"):
        expect(torch.equal(got[name].cpu(), expected[name]), f"{name}: {got[name].tolist()} vs CPU {expected[name].tolist()}")
    expect(bool(expected.waveform_lengths.gt(0).all()), f"no speech rendered: {expected.waveform_lengths.tolist()}")
    difference = relative_difference(got.waveforms, expected.waveforms)
    expect(difference <= 1e-3, f"waveforms differ from the CPU's by rel {difference:.1e}")
    return (f"{expected.ustoken_lengths.tolist()} USTokens, {expected.waveform_lengths.tolist()} samples equal, "
            f"waveforms rel {difference:.0e}")


def check_codec_decode(device: torch.device) -> str:
    """`decode_codes` (the last step of `generate_speech` / `render_speech` with `codec=`, as evaluation calls it) with
    codec, codes and lengths on the device (ragged, one no-speech item) equals the CPU's (waveforms to rel 5e-2:
    Griffin-Lim's 32 phase iterations amplify rounding, so even fp32 and fp64 on the CPU differ by rel 3e-2)."""
    _, model, codec = dualspeechlm_parts()
    codes = torch.randint(0, codec.codebook_size, (3, codec.num_codebooks, 12), generator=torch.Generator().manual_seed(0))
    lengths = torch.tensor([12, 5, 0])
    expected = model.decode_codes(codec, codes, lengths)
    got = model.decode_codes(on(device, codec), codes.to(device), lengths.to(device))
    expect(torch.equal(got[1].cpu(), expected[1]), f"sample lengths {got[1].tolist()} vs CPU {expected[1].tolist()}")
    difference = relative_difference(got[0], expected[0])
    expect(difference <= 5e-2, f"waveforms differ from the CPU's by rel {difference:.1e}")
    return f"sample lengths {expected[1].tolist()} equal, waveforms rel {difference:.0e}"


def check_trainer_step(device: torch.device) -> str:
    """One step of stage 3's `BatchSamplerTrainer` (single-task batches, the stage-3 collator; bf16 on CUDA)."""
    tokenizer, model, _ = dualspeechlm_parts()
    items = examples(model.config.codebook_size)
    before = [p.detach().clone() for p in model.parameters()]
    with tempfile.TemporaryDirectory() as output_dir:
        args = TrainingArguments(
            output_dir=output_dir, max_steps=1, per_device_train_batch_size=2, learning_rate=1e-3,
            lr_scheduler_type="cosine", warmup_steps=0, weight_decay=0.05, adam_beta2=0.95, logging_steps=1,
            save_strategy="no", report_to=[], seed=0, remove_unused_columns=False, dataloader_num_workers=0,
            dataloader_pin_memory=False, label_names=["labels"], bf16=device.type == "cuda", use_cpu=device.type == "cpu",
            disable_tqdm=True)
        trainer = BatchSamplerTrainer(model=model, args=args, train_dataset=items,
                                      batch_sampler=TaskBatchSampler([item["task"] for item in items], 2, seed=0),
                                      data_collator=DualSpeechLMCollator(tokenizer, model.config))
        trainer.train()
    log = trainer.state.log_history[0]
    expect({"loss", "llm_loss", "acoustic_loss"} <= set(log), f"logged {sorted(log)}")
    expect(bool(np.isfinite(log["loss"])), f"loss {log['loss']}")
    placed = next(model.parameters()).device
    expect(placed.type == device.type, f"the Trainer ran the model on {placed}")
    moved = sum(not torch.equal(old, new.cpu()) for old, new in zip(before, model.parameters()))
    expect(moved > 0, "no weight changed")
    return f"loss {log['loss']:.4f} (llm {log['llm_loss']:.4f}, acoustic {log['acoustic_loss']:.4f}), bf16={args.bf16}"


CHECKS = [check_ustokenizer_encode, check_ustokenizer_bf16, check_dualspeechlm_train_fp32, check_dualspeechlm_train_bf16,
          check_dualspeechlm_text, check_dualspeechlm_speech, check_dualspeechlm_speech_preset, check_codec_decode,
          check_trainer_step]


def run_check(check, device: torch.device) -> tuple[str, bool, str, float, float | None]:
    """-> (name, passed, detail, seconds, peak CUDA MiB or None); a failure prints its traceback."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    try:
        detail, passed = check(device), True
    except Exception as error:  # noqa: BLE001 - every failure is reported and the other checks run
        traceback.print_exc()
        detail, passed = f"{type(error).__name__}: {error}".splitlines()[0][:200], False
    if cuda:
        torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    return check.__name__.removeprefix("check_"), passed, detail, time.perf_counter() - start, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="the device to check against the CPU (cuda, cuda:1, cpu)")
    parser.add_argument("--out", help="also write the Markdown report here")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for the references (tiny models gain nothing)")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 comparisons: true fp32 on the device too
    torch.backends.cudnn.allow_tf32 = False
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    header = (f"GPU smoke test on {device} ({name}): torch {torch.__version__}, transformers {transformers.__version__}, "
              f"python {sys.version.split()[0]}")
    print(header, flush=True)
    rows = []
    for check in CHECKS:
        rows.append(run_check(check, device))
        print(f"{rows[-1][0]}: {'PASS' if rows[-1][1] else 'FAIL'} ({rows[-1][3]:.1f} s)", flush=True)
    lines = [header, "", "| check | result | seconds | peak CUDA MiB |", "|---|---|---:|---:|"]
    lines += [f"| {check} | {'PASS' if passed else 'FAIL'}: {detail.replace('|', '/')} | {seconds:.2f} | "
              f"{'-' if peak is None else f'{peak:.1f}'} |" for check, passed, detail, seconds, peak in rows]
    failed = sum(not row[1] for row in rows)
    lines += ["", f"{len(rows) - failed} of {len(rows)} checks passed."]
    report = "\n".join(lines) + "\n"
    print("\n" + report)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as file:
            file.write(report)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
