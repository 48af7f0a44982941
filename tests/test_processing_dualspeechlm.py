"""DualSpeechLMProcessor: task sequences, audio -> USTokens at 25 Hz, decoding, save / load, clear errors."""

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from transformers import AutoProcessor

from dualspeechlm.processing.corpus import TRAIN_VOICES, synthesize
from dualspeechlm.processing.text_tokenizer import train_text_tokenizer
from dualspeechlm.processing_dualspeechlm import DualSpeechLMProcessor
from dualspeechlm.testing_utils import TINY_TEXTS, tiny_random_model_and_processor

pytestmark = pytest.mark.usefixtures("one_thread")

K = 32  # USTokens
TEXTS = TINY_TEXTS
EXAMPLES = [  # every task once, with its prompt fields, input speech and answer
    {"task": "asr", "speech_ids": [3, 1, 4], "answer": "anna saw the cat"},
    {"task": "s2tt", "speech_ids": [5, 9], "language": "es", "answer": "el gato"},
    {"task": "ser", "speech_ids": [2, 6, 5, 3], "answer": "fast"},
    {"task": "sqa", "speech_ids": [7], "question": "who saw the cat?", "answer": "anna"},
    {"task": "tts", "text": "the cat", "answer_speech_ids": [8, 31]},
    {"task": "vc", "speech_ids": [1, 2], "answer_speech_ids": [0, 0, 4]},
    {"task": "t2st", "text": "the dog", "language": "fr", "answer_speech_ids": [10]},
    {"task": "sc", "speech_ids": [11, 12], "answer_speech_ids": [13, 14]},
]


@pytest.fixture(scope="module")
def parts():
    return tiny_random_model_and_processor(num_speech_tokens=K)


@pytest.fixture(scope="module")
def speech(espeak):
    return [synthesize(text, voice) for text, voice in ((TEXTS[0], TRAIN_VOICES[0]), (TEXTS[2], TRAIN_VOICES[1]))]


def test_build_inputs_masks_labels_on_answer_and_condition_on_prompt(parts):
    _, processor = parts
    tokenizer, offset = processor.tokenizer, processor.speech_token_offset
    batch = processor.build_inputs(EXAMPLES, with_answers=True)
    assert batch["tasks"] == [example["task"] for example in EXAMPLES]
    for row, example in enumerate(EXAMPLES):
        length, prompt = int(batch["attention_mask"][row].sum()), int(batch["condition_mask"][row].sum())
        ids, labels = batch["input_ids"][row].tolist(), batch["labels"][row].tolist()
        assert batch["condition_mask"][row, :prompt].all() and ids[0] == tokenizer.bos_token_id  # right padding
        assert labels[:prompt] == [-100] * prompt and labels[length:] == [-100] * (len(ids) - length)
        assert labels[prompt:length] == ids[prompt:length] and ids[length - 1] == tokenizer.eos_token_id
        prompt_speech = [i - offset for i in ids[:prompt] if offset <= i < offset + K]
        assert prompt_speech == example.get("speech_ids", [])  # USTokens enter at speech_token_offset + id
        if "answer_speech_ids" in example:
            answer = [offset + i for i in example["answer_speech_ids"]]
            assert ids[prompt:length] == [processor.audio_start_token_id, *answer, processor.audio_end_token_id,
                                          tokenizer.eos_token_id]
        else:
            assert processor.decode_text([ids[prompt:length]]) == [example["answer"]]

    left = processor.build_inputs(EXAMPLES, with_answers=True, padding_side="left")
    prompts = processor.build_inputs(EXAMPLES, with_answers=False, padding_side="left")
    assert left["attention_mask"][:, -1].all() and "labels" not in prompts
    for row in range(len(EXAMPLES)):  # the same tokens and masks on either side of the padding
        right_mask, left_mask = batch["attention_mask"][row].bool(), left["attention_mask"][row].bool()
        for key in ("input_ids", "labels", "condition_mask"):
            assert torch.equal(batch[key][row][right_mask], left[key][row][left_mask])
        assert torch.equal(prompts["input_ids"][row][prompts["attention_mask"][row].bool()],
                           batch["input_ids"][row][batch["condition_mask"][row].bool()])


def test_call_tokenizes_audio_at_25_tokens_per_second_and_decodes(parts, speech):
    model, processor = parts
    inputs = processor(task="sqa", audio=speech, sampling_rate=16000, question=["who saw the cat?", "what sleeps?"])
    assert inputs["tasks"] == ["sqa", "sqa"] and inputs["attention_mask"][:, -1].all()  # left-padded prompts
    is_speech = (inputs["input_ids"] >= processor.speech_token_offset) & inputs["attention_mask"].bool()
    for row, clip in enumerate(speech):
        tokens = int(is_speech[row].sum())
        assert tokens == math.ceil((len(clip) // 160) / 4)  # 100 mel frames/s, 4 per USToken
        assert abs(tokens / (len(clip) / 16000) - 25) < 0.5
    resampled = torch.nn.functional.interpolate(torch.from_numpy(speech[0])[None, None], scale_factor=1.5)[0, 0]
    assert abs(len(processor.speech_ids(resampled, sampling_rate=24000)[0]) - int(is_speech[0].sum())) <= 1

    generated = model.generate(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                               max_new_tokens=4, do_sample=False)
    texts = processor.decode_text(generated[:, inputs["input_ids"].shape[1]:])
    assert len(texts) == 2 and all(isinstance(text, str) for text in texts)

    prompts = processor(task="tts", text=[TEXTS[0], TEXTS[2]])
    voice = processor.speaker_embedding(speech[1], sampling_rate=16000)
    assert voice.shape == (1, 512) and torch.allclose(voice.norm(dim=-1), torch.ones(1))
    torch.manual_seed(0)
    out = model.generate(prompts["input_ids"], prompts["attention_mask"], prompts["condition_mask"],
                         voice.expand(2, -1), output_audio=True, max_new_tokens=6, acoustic_max_new_tokens=8)
    waveforms = out.audio_arrays()
    hop = model.config.codec_sampling_rate // 50
    assert [len(w) for w in waveforms] == [n * hop for n in out.code_lengths.tolist()]
    assert all(w.dtype == np.float32 and w.ndim == 1 for w in waveforms)


def test_save_and_load_round_trip(parts, speech, tmp_path):
    _, processor = parts
    processor.save_pretrained(tmp_path)
    for name in ("processor_config.json", "processing_dualspeechlm.py", "tasks.py", "tokenizer.json",
                 "ustokenizer/preprocessor_config.json", "ustokenizer/model.safetensors",
                 "speaker_encoder/model.safetensors"):
        assert (tmp_path / name).is_file(), name
    assert not [f for _, _, files in os.walk(tmp_path) for f in files if f.endswith((".bin", ".pt", ".pth", ".ckpt"))]
    for loaded in (DualSpeechLMProcessor.from_pretrained(tmp_path), AutoProcessor.from_pretrained(tmp_path)):
        assert type(loaded) is DualSpeechLMProcessor
        assert loaded.speech_token_offset == processor.speech_token_offset
        expected, got = (p(task="asr", audio=speech, sampling_rate=16000) for p in (processor, loaded))
        for key in ("input_ids", "attention_mask", "condition_mask"):
            assert torch.equal(got[key], expected[key])
        assert torch.allclose(loaded.speaker_embedding(speech[0], 16000),
                              processor.speaker_embedding(speech[0], 16000), atol=1e-6)

    # a fresh process that imports only the processor module
    fresh = subprocess.run([sys.executable, "-c", "import sys; from dualspeechlm.processing_dualspeechlm import "
                            "DualSpeechLMProcessor as P; "
                            "print(type(P.from_pretrained(sys.argv[1]).ustokenizer).__name__)",
                            str(tmp_path)], capture_output=True, text=True, timeout=120,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert fresh.stdout.strip() == "USTokenizerModel", fresh.stderr[-2000:]

    for path, _, files in os.walk(tmp_path / "speaker_encoder"):  # optional: a folder without it loads, and says so
        for file in files:
            os.remove(os.path.join(path, file))
    bare = DualSpeechLMProcessor.from_pretrained(tmp_path)
    assert bare.speaker_encoder is None
    with pytest.raises(ValueError, match="has no speaker_encoder"):
        bare.speaker_embedding(speech[0], 16000)
    given = DualSpeechLMProcessor.from_pretrained(tmp_path, speaker_encoder=processor.speaker_encoder)
    assert given.speaker_encoder is processor.speaker_encoder


@pytest.mark.parametrize("call, match", [
    (dict(task="dance", text="the cat"), "unknown task 'dance'"),
    (dict(task="tts", audio=np.zeros(1600, np.float32), sampling_rate=16000), "reads text, not audio"),
    (dict(task="asr"), "reads speech: pass audio"),
    (dict(task="tts"), "needs the field 'text'"),
    (dict(task="t2st", text="the cat"), "needs the field 'language'"),
    (dict(task="tts", text="   "), "empty text"),
    (dict(task="tts", text="the cat " * 200), "tokens long, more than the model's maximum of 256"),
    (dict(task="asr", audio=np.zeros((2, 1600), np.float32), sampling_rate=16000), "only mono audio"),
    (dict(task="asr", audio=np.zeros(1600, np.float32)), "sampling_rate is required"),
    (dict(task="tts", text=["a", "b"], language=["en", "es", "fr"]), "one entry per item"),
    (dict(task="tts", text="the cat", return_tensors="np"), "PyTorch tensors only"),
])
def test_bad_inputs_raise_clear_errors(parts, call, match):
    with pytest.raises(ValueError, match=match):
        parts[1](**call)


def test_bad_speech_ids_and_tokenizers_raise_clear_errors(parts):
    _, processor = parts
    with pytest.raises(ValueError, match=r"speech_ids must be USToken ids in \[0, 32\)"):
        processor.build_inputs([{"task": "asr", "speech_ids": [1, 32], "answer": "x"}], with_answers=True)
    with pytest.raises(ValueError, match="needs the USTokens of its input speech"):
        processor.build_inputs([{"task": "asr", "answer": "x"}], with_answers=True)
    plain = train_text_tokenizer(TEXTS, vocab_size=300)  # no <a_k>
    with pytest.raises(ValueError, match="must hold <audio>, </audio> and <a_0>..<a_31>"):
        DualSpeechLMProcessor(processor.feature_extractor, plain, processor.ustokenizer)
