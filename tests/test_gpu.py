"""The library's models on a CUDA device, checked against the same weights on the CPU.

Marked `gpu` and skipped where CUDA is missing; `DUALSPEECHLM_GPU_TEST_DEVICE` names another device to check (e.g.
`cuda:1`, or `cpu` to run the checks anywhere, the "device" then being the CPU).

    pytest -m gpu tests/test_gpu.py
    DUALSPEECHLM_GPU_TEST_DEVICE=cpu pytest -m gpu tests/test_gpu.py

Tiny random models: a USTokenizer of the tiny stage-1 preset's config (Whisper tiny.en shapes), and the tests' tiny
DualSpeechLM (`dualspeechlm.testing_utils`: built as stage 3 builds it, a tiny AcousticGPT, a 2-quantizer mel codec
with Griffin-Lim; dropout off). Each test builds its reference on the CPU, copies the model to the device and compares;
fp32 comparisons run with TF32 off. What a preset decides is read from the package's presets (`USTokenizerRecipe`,
`DualSpeechLMRecipe`), not copied here, so the checks follow the presets.
"""

from __future__ import annotations

import copy
import functools
import os

import numpy as np
import pytest
import torch
from transformers import TrainingArguments

from dualspeechlm.configuration_mel_codec import MelCodecConfig
from dualspeechlm.configuration_ustokenizer import USTokenizerConfig
from dualspeechlm.feature_extraction_ustokenizer import USTokenizerFeatureExtractor
from dualspeechlm.modeling_mel_codec import MelCodecModel
from dualspeechlm.modeling_ustokenizer import USTokenizerModel
from dualspeechlm.tasks import build_inputs
from dualspeechlm.testing_utils import tiny_random_model_and_processor, without_dropout
from dualspeechlm.training.multitask import DualSpeechLMCollator, TaskBatchSampler
from dualspeechlm.training.train_dualspeechlm import DualSpeechLMRecipe
from dualspeechlm.training.train_ustokenizer import USTokenizerRecipe
from dualspeechlm.training.trainer import BatchSamplerTrainer, precision_arguments

pytestmark = [pytest.mark.gpu, pytest.mark.usefixtures("one_thread")]

CPU = torch.device("cpu")
NUM_SPEECH_TOKENS = 16


@pytest.fixture(scope="module")
def device():
    """The device under test (CUDA unless `DUALSPEECHLM_GPU_TEST_DEVICE` says otherwise), TF32 off meanwhile."""
    device = torch.device(os.environ.get("DUALSPEECHLM_GPU_TEST_DEVICE", "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device (DUALSPEECHLM_GPU_TEST_DEVICE=cpu runs these checks on the CPU)")
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    # fp32 means fp32 on the device too
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield device
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32


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
    """(USTokenizer of the tiny stage-1 preset's config, features of 2 random waveforms of 1.3 s and 2 s) on the
    CPU."""
    recipe = USTokenizerRecipe.tiny()
    config = getattr(USTokenizerConfig, recipe.tokenizer_preset)(**recipe.tokenizer_config)
    torch.manual_seed(0)
    model = USTokenizerModel(config).eval()
    rng = np.random.default_rng(0)
    audio = [rng.normal(0, 0.1, int(seconds * 16000)).astype(np.float32) for seconds in (1.3, 2.0)]
    features = USTokenizerFeatureExtractor()(audio, sampling_rate=16000, return_tensors="pt")
    return model, dict(features)


def examples(codebook_size: int) -> list[dict]:
    """Stage 3 examples (what training/multitask.py makes of cached corpus rows): 2 understanding, 2 TTS items."""
    rng = np.random.default_rng(0)

    def target(frames: int) -> dict:
        return {"answer_speech_ids": rng.integers(0, NUM_SPEECH_TOKENS, frames // 2 + 1).tolist(),
                "codes": rng.integers(0, codebook_size, (2, frames)),
                "speaker": rng.normal(size=512).astype(np.float32)}

    return [
        {"task": "asr", "speech_ids": [3, 1, 4, 1, 5], "answer": "anna saw the cat"},
        {"task": "tts", "text": "the cat", **target(3)},
        {"task": "sqa", "speech_ids": [2, 7], "question": "who saw the cat?", "answer": "anna"},
        {"task": "tts", "text": "the dog sleeps on the warm mat", **target(7)},
    ]


def dualspeechlm_parts():
    """(text tokenizer, DualSpeechLM with its mel codec): the library's tiny random parts, fresh and on the CPU,
    without dropout (train-mode losses are compared across devices)."""
    model, processor = tiny_random_model_and_processor(num_speech_tokens=NUM_SPEECH_TOKENS)
    return processor.tokenizer, without_dropout(model)


def tts_prompts(tokenizer, model) -> tuple[dict, torch.Tensor]:
    """(left-padded generation prompts of the two TTS examples, their speaker embeddings)."""
    tts = [example for example in examples(model.config.codebook_size) if example["task"] == "tts"]
    prompts = build_inputs(tokenizer, model.config, tts, with_answers=False, padding_side="left")
    return prompts, torch.from_numpy(np.stack([example["speaker"] for example in tts]))


def speak(model, prompts: dict, speakers: torch.Tensor, device: torch.device, autocast: bool = False, **settings):
    """`generate_speech` of `prompts` on `device`; `settings`: more of its arguments (tensors are moved to
    `device`)."""
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        return model.generate_speech(prompts["input_ids"].to(device), prompts["attention_mask"].to(device),
                                     condition_mask=prompts["condition_mask"].to(device),
                                     speaker_embeddings=speakers.to(device), **to_device(settings, device))


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


# ---- the checks ----


def test_ustokenizer_encode_matches_cpu(device):
    model, features = ustokenizer_inputs()
    expected = model.encode(**features)
    got = on(device, model).encode(**to_device(features, device))
    assert got.ids.device.type == device.type
    assert torch.equal(got.lengths.cpu(), expected.lengths)
    mismatches = int((got.ids.cpu() != expected.ids).sum())
    assert mismatches == 0, f"{mismatches} of {expected.ids.numel()} ids differ from the CPU's"


def test_ustokenizer_encode_runs_under_bf16_autocast(device):
    """The VQ stays fp32 under autocast: same shapes, lengths and padding as fp32 (how many ids agree is not asked)."""
    model, features = ustokenizer_inputs()
    device_model, inputs = on(device, model), to_device(features, device)
    fp32 = device_model.encode(**inputs)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        bf16 = device_model.encode(**inputs)
    assert bf16.ids.shape == fp32.ids.shape and torch.equal(bf16.lengths, fp32.lengths)
    valid = fp32.ids != model.config.ids_pad_value
    assert bool(((bf16.ids >= 0) == valid).all()), "padding moved under autocast"


def test_dualspeechlm_fp32_training_step_matches_cpu(device):
    """The forward loss, and the loss after one AdamW step, equal the CPU's (rel 1e-4)."""
    tokenizer, model = dualspeechlm_parts()
    batch = mixed_batch(tokenizer, model)
    expected = train_step(on(CPU, model), batch, autocast=False)
    got = train_step(on(device, model), to_device(batch, device), autocast=False)
    for name, index in (("loss", 0), ("loss after a step", 1)):
        difference = relative_difference(got[index], expected[index])
        assert difference <= 1e-4, f"{name} {got[index].item():.6f} vs CPU {expected[index].item():.6f}"
    assert got[1] < got[0], "one step did not lower the loss"


def test_dualspeechlm_bf16_training_step_updates_weights(device):
    tokenizer, model = dualspeechlm_parts()
    device_model = on(device, model)
    before = [p.detach().clone() for p in device_model.parameters()]
    first, second, trained = train_step(device_model, to_device(mixed_batch(tokenizer, model), device), autocast=True)
    assert bool(torch.isfinite(first) & torch.isfinite(second)), f"losses {first.item()}, {second.item()}"
    assert any(not torch.equal(old, new) for old, new in zip(before, trained.parameters())), "no weight changed"


def test_text_generation_matches_cpu(device):
    """Greedy text answers of left-padded understanding prompts."""
    tokenizer, model = dualspeechlm_parts()
    prompts = build_inputs(tokenizer, model.config, examples(model.config.codebook_size)[0::2], with_answers=False,
                           padding_side="left")
    settings = dict(max_new_tokens=8, do_sample=False)
    expected = model.generate(prompts["input_ids"], attention_mask=prompts["attention_mask"], **settings)
    got = on(device, model).generate(prompts["input_ids"].to(device),
                                     attention_mask=prompts["attention_mask"].to(device), **settings)
    assert torch.equal(got.cpu(), expected)


def test_speech_generation_matches_cpu_and_runs_under_bf16(device):
    """Greedy USTokens, then AcousticGPT's codes (an untrained model writes every one allowed)."""
    tokenizer, model = dualspeechlm_parts()
    prompts, speakers = tts_prompts(tokenizer, model)
    greedy = dict(do_sample=False, max_new_tokens=8, acoustic_do_sample=False, acoustic_max_new_tokens=12)
    expected = speak(model, prompts, speakers, CPU, **greedy)
    device_model = on(device, model)
    got = speak(device_model, prompts, speakers, device, **greedy)
    for name in ("sequences", "codes", "code_lengths"):
        assert torch.equal(got[name].cpu(), expected[name]), name
    bf16 = speak(device_model, prompts, speakers, device, autocast=True, **greedy)
    assert bf16.codes.shape[:2] == expected.codes.shape[:2]


def ustoken_reading_codec(config) -> MelCodecModel:
    """A tiny random codec that renders USTokens and the voice alone (`decodes_ustokens_alone`) through its neural
    vocoder, as the main job's USToken decoder does; code shapes as the tiny model's codec."""
    torch.manual_seed(0)
    return MelCodecModel(MelCodecConfig(
        hidden_size=16, latent_size=8, encoder_layers=1, decoder_layers=1, num_quantizers=config.num_codebooks,
        codebook_size=config.codebook_size, vocoder="neural", vocoder_hidden_size=16, vocoder_intermediate_size=32,
        vocoder_layers=1, ustoken_vocab_size=config.num_speech_tokens, ustoken_decode_codebooks=0,
        speaker_embedding_size=config.speaker_embedding_size)).eval()


def test_speech_as_the_tiny_preset_writes_it_matches_cpu(device):
    """The tiny stage-3 preset's USToken writing (its `speech_generation`, e.g. beam search) and its AcousticGPT
    setting, rendered by a codec that decodes the USTokens and the voice alone: the CPU's sequences and lengths,
    waveforms to rel 1e-3. At most 8 USTokens and at least 6 (an untrained model would stop at once)."""
    recipe = DualSpeechLMRecipe.tiny()
    assert recipe.speech_generation is not None, "the tiny preset no longer sets how the model writes USTokens"
    assert not recipe.speech_generation.get("do_sample", True), (
        "the tiny preset now samples its USTokens: a token-for-token comparison across devices needs another check")
    tokenizer, model = dualspeechlm_parts()
    model.config.speech_generation = dict(recipe.speech_generation)
    model.config.acoustic_loss_weight = recipe.acoustic_loss_weight
    with torch.no_grad():  # at init the tokens' logits lie within rounding of each other, and beams would follow it
        torch.manual_seed(0)
        model.get_output_embeddings().weight.normal_(std=1.0)
    model.set_codec(ustoken_reading_codec(model.config))
    prompts, speakers = tts_prompts(tokenizer, model)
    length = dict(max_new_tokens=8, min_new_tokens=6, output_audio=True)
    expected = speak(model, prompts, speakers, CPU, **length)
    got = speak(on(device, model), prompts, speakers, device, **length)
    for name in ("sequences", "ustoken_lengths", "waveform_lengths"):
        assert torch.equal(got[name].cpu(), expected[name]), name
    assert bool(expected.waveform_lengths.gt(0).all()), "no speech rendered"
    difference = relative_difference(got.waveforms, expected.waveforms)
    assert difference <= 1e-3, f"waveforms differ from the CPU's by rel {difference:.1e}"


def test_codec_decode_matches_cpu(device):
    """`decode_codes` (how `generate(..., output_audio=True)` ends) with the model's codec, codes and lengths on the
    device (ragged, one no-speech item); waveforms to rel 5e-2: Griffin-Lim's phase iterations amplify rounding, so
    even fp32 and fp64 on the CPU differ by rel 3e-2."""
    _, model = dualspeechlm_parts()
    codes = torch.randint(0, model.config.codebook_size, (3, model.config.num_codebooks, 12),
                          generator=torch.Generator().manual_seed(0))
    lengths = torch.tensor([12, 5, 0])
    expected = model.decode_codes(codes, lengths)
    got = on(device, model).decode_codes(codes.to(device), lengths.to(device))
    assert torch.equal(got[1].cpu(), expected[1])
    difference = relative_difference(got[0], expected[0])
    assert difference <= 5e-2, f"waveforms differ from the CPU's by rel {difference:.1e}"


def test_stage3_trainer_step(device, tmp_path):
    """One step of stage 3's `BatchSamplerTrainer` (single-task batches, the stage-3 collator) with the paper preset's
    optimisation settings and precision (`auto`: bf16 on a GPU that has it)."""
    recipe = DualSpeechLMRecipe.paper()
    tokenizer, model = dualspeechlm_parts()
    items = examples(model.config.codebook_size)
    before = [p.detach().clone() for p in model.parameters()]
    precision = precision_arguments(recipe.precision)
    if device.type == "cpu":
        precision = {**precision, "use_cpu": True}
    args = TrainingArguments(
        output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=2, learning_rate=recipe.learning_rate,
        lr_scheduler_type="cosine", warmup_steps=0, weight_decay=recipe.weight_decay, adam_beta2=0.95,
        max_grad_norm=recipe.max_grad_norm, logging_steps=1, save_strategy="no", report_to=[], seed=0,
        remove_unused_columns=False, dataloader_num_workers=0, dataloader_pin_memory=False, label_names=["labels"],
        disable_tqdm=True, **precision)
    trainer = BatchSamplerTrainer(model=model, args=args, train_dataset=items,
                                  batch_sampler=TaskBatchSampler([item["task"] for item in items], 2, seed=0),
                                  data_collator=DualSpeechLMCollator(tokenizer, model.config))
    trainer.train()
    log = trainer.state.log_history[0]
    assert {"loss", "llm_loss", "acoustic_loss"} <= set(log), sorted(log)
    assert np.isfinite(log["loss"])
    assert next(model.parameters()).device.type == device.type, "the Trainer ran the model elsewhere"
    assert any(not torch.equal(old, new.cpu()) for old, new in zip(before, model.parameters())), "no weight changed"
