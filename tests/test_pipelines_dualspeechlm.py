"""transformers pipelines on a saved DualSpeechLM folder, in a fresh process without the package (remote code)."""

import json
import os

import numpy as np
import pytest
import soundfile
import torch
from transformers import pipeline

from dualspeechlm.pipelines_dualspeechlm import (
    DualSpeechLMSpeechRecognitionPipeline,
    DualSpeechLMTextToSpeechPipeline,
    save_for_pipelines,
)
from dualspeechlm.processing.corpus import TRAIN_VOICES, synthesize
from dualspeechlm.testing_utils import tiny_random_model_and_processor

from conftest import run_without_package
from test_processing_dualspeechlm import TEXTS, K

pytestmark = pytest.mark.usefixtures("one_thread")

GREEDY_SPEECH = dict(do_sample=False, max_new_tokens=6, acoustic_do_sample=False, acoustic_max_new_tokens=8)

FRESH_PROCESS = """
import json, numpy as np, soundfile
from transformers import pipeline
folder, wav, out = sys.argv[1:4]
asr = pipeline("automatic-speech-recognition", model=folder, trust_remote_code=True)
audio, rate = soundfile.read(wav, dtype="float32")
short = {"max_new_tokens": 5}
texts = [asr(wav, generate_kwargs=short), asr(audio, sampling_rate=rate, generate_kwargs=short),
         asr({"array": audio, "sampling_rate": rate}, generate_kwargs=short)]
tts = pipeline("text-to-speech", model=folder, trust_remote_code=True)
speech = tts("anna saw the cat", voice=wav, generate_kwargs=%r)
assert type(speech["audio"]) is np.ndarray and type(speech["sampling_rate"]) is int
np.save(out + ".npy", speech["audio"])
json.dump({"texts": texts, "sampling_rate": speech["sampling_rate"], "dtype": str(speech["audio"].dtype),
           "classes": [type(asr.model).__module__, type(asr).__name__, type(tts).__name__]}, open(out, "w"))
""" % GREEDY_SPEECH


@pytest.fixture(scope="module")
def parts():
    """The tiny random model and processor that test_processing_dualspeechlm tests."""
    return tiny_random_model_and_processor(num_speech_tokens=K)


@pytest.fixture(scope="module")
def clip(espeak):
    return synthesize(TEXTS[0], TRAIN_VOICES[0])


def test_both_pipelines_on_a_saved_folder_without_the_package(parts, clip, tmp_path):
    model, processor = parts
    folder, wav = tmp_path / "model", tmp_path / "clip.wav"
    save_for_pipelines(model, processor, folder)
    soundfile.write(wav, clip, 16000)
    saved = set(os.listdir(folder))
    assert {"pipelines_dualspeechlm.py", "processing_dualspeechlm.py", "tasks.py", "model.safetensors"} <= saved
    assert not [f for _, _, files in os.walk(folder) for f in files if f.endswith((".bin", ".pt", ".pth", ".ckpt"))]
    result = run_without_package(FRESH_PROCESS, folder, wav, tmp_path / "out.json", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["classes"][1:] == ["DualSpeechLMSpeechRecognitionPipeline", "DualSpeechLMTextToSpeechPipeline"]
    assert out["classes"][0].startswith("transformers_modules.")  # the folder's code, not the package's

    # the same answers as the processor and model give in this process
    inputs = processor(task="asr", audio=clip, sampling_rate=16000)
    generated = model.generate(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], do_sample=False,
                               max_new_tokens=5, eos_token_id=processor.tokenizer.eos_token_id)
    expected = processor.decode_text(generated[:, inputs["input_ids"].shape[1]:])[0]
    assert out["texts"] == [{"text": expected}] * 3
    prompt = processor(task="tts", text="anna saw the cat")
    speech = model.generate(prompt["input_ids"], prompt["attention_mask"], prompt["condition_mask"],
                            processor.speaker_embedding(clip, 16000), output_audio=True, **GREEDY_SPEECH)
    audio = np.load(tmp_path / "out.json.npy")
    assert out["sampling_rate"] == 16000 and out["dtype"] == "float32" and audio.ndim == 1 and len(audio) > 0
    assert np.allclose(audio, speech.audio_arrays()[0], atol=1e-5)


def test_pipeline_errors_are_clear(parts, clip, tmp_path):
    model, processor = parts
    save_for_pipelines(model, processor, tmp_path)
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        pipeline("automatic-speech-recognition", model=str(tmp_path))
    asr = DualSpeechLMSpeechRecognitionPipeline(model=model, processor=processor, device="cpu")
    assert asr([clip, clip[:8000]], sampling_rate=16000, generate_kwargs={"max_new_tokens": 2})[1].keys() == {"text"}
    with pytest.raises(ValueError, match="no audio file"):
        asr(str(tmp_path / "missing.wav"))
    with pytest.raises(ValueError, match="sampling_rate is required"):
        asr(clip)
    with pytest.raises(ValueError, match='needs "array"'):
        asr({"audio": clip})
    tts = DualSpeechLMTextToSpeechPipeline(model=model, processor=processor, device="cpu")
    with pytest.raises(ValueError, match="empty text"):
        tts(" ")
    with pytest.raises(ValueError, match="needs the field 'language'"):
        tts("the cat", task="t2st")
    spoken = tts("the cat", task="t2st", language="fr", generate_kwargs=GREEDY_SPEECH)
    assert spoken["audio"].ndim == 1 and spoken["sampling_rate"] == 16000
    with pytest.raises(ValueError, match="longer than the backbone's max_position_embeddings"):
        tts("the cat", generate_kwargs={"max_new_tokens": 400})
    assert model.config.speech_generation["max_new_tokens"] > model.config.text_config.max_position_embeddings
    torch.manual_seed(0)  # the default length is shortened to fit the backbone
    assert tts("the cat", generate_kwargs={"acoustic_max_new_tokens": 8})["audio"].dtype == np.float32


def test_text_to_speech_without_a_voice_speaks_in_the_neutral_voice(parts, clip):
    model, processor = parts
    tts = DualSpeechLMTextToSpeechPipeline(model=model, processor=processor, device="cpu")
    neutral = processor.default_speaker_embedding()
    assert neutral.shape == (1, 512) and neutral.norm() > 0.5  # not the zero vector understanding items train with
    assert torch.equal(tts.preprocess("the cat")["speaker_embeddings"], neutral)
    assert not torch.allclose(tts.preprocess("the cat", voice=clip, voice_sampling_rate=16000)["speaker_embeddings"],
                              neutral, atol=1e-3)
