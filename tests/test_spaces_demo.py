"""The Gradio Space (spaces_demo/app.py) on a tiny random model folder, called through gradio_client like a user."""

import importlib.util
import json
import socket
import urllib.request
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import soundfile
import torch
import torchaudio
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from dualspeechlm.pipelines_dualspeechlm import save_for_pipelines
from dualspeechlm.processing.corpus import TRAIN_VOICES, synthesize
from dualspeechlm.testing_utils import TINY_TEXTS, tiny_random_model_and_processor

pytestmark = [pytest.mark.usefixtures("one_thread"),  # and gradio's queue's own pandas deprecations:
              pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting'", "ignore:The copy keyword")]

APP_FILE = Path(__file__).resolve().parents[1] / "spaces_demo" / "app.py"


def load_app():
    """spaces_demo/app.py as a module, imported from its file as a Space runs it (not through the package)."""
    spec = importlib.util.spec_from_file_location("spaces_demo_app", APP_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(demo: gr.Blocks) -> str:
    """Launch `demo` locally without blocking; returns its URL."""
    demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    return demo.local_url


def tiny_model_folder(path: Path) -> Path:
    """A tiny random model + processor saved as a Space loads it: a folder with its own code."""
    save_for_pipelines(*tiny_random_model_and_processor(), path)
    return path


@pytest.fixture(scope="module")
def app():
    return load_app()


@pytest.fixture(scope="module")
def client(app, tmp_path_factory):
    demo = app.build_demo(tiny_model_folder(tmp_path_factory.mktemp("space") / "model"))
    url = launch(demo)
    yield Client(url, verbose=False)
    demo.close()


@pytest.fixture(scope="module")
def wavs(espeak, tmp_path_factory):
    """Input files: espeak speech as 16 kHz mono and as 44.1 kHz stereo, a 31 s clip and a silent one."""
    folder = tmp_path_factory.mktemp("wavs")
    speech = synthesize(TINY_TEXTS[0], TRAIN_VOICES[0])
    voice = synthesize(TINY_TEXTS[2], TRAIN_VOICES[1])
    stereo = torchaudio.functional.resample(torch.from_numpy(speech), 16000, 44100).numpy()
    files = {"speech": (speech, 16000), "voice": (voice, 16000),
             "stereo": (np.stack([stereo, 0.5 * stereo], 1), 44100),
             "long": (np.tile(speech, int(31 * 16000 / len(speech)) + 1), 16000),
             "silent": (np.zeros(16000, np.float32), 16000)}
    for name, (audio, rate) in files.items():
        soundfile.write(folder / f"{name}.wav", audio, rate)
    return {name: handle_file(str(folder / f"{name}.wav")) for name in files}


def test_every_tab_answers_through_the_client(client, wavs, app):
    assert isinstance(client.predict(wavs["stereo"], api_name="/asr"), str)  # 44.1 kHz stereo in
    assert isinstance(client.predict(wavs["speech"], "who saw the cat?", api_name="/qa"), str)
    for language in app.LANGUAGES.values():
        assert isinstance(client.predict(wavs["speech"], language, api_name="/translate"), str)
    outputs = [client.predict("anna saw the cat", None, api_name="/tts"),  # no reference: the neutral voice
               client.predict("anna saw the cat", wavs["voice"], api_name="/tts"),
               client.predict(wavs["speech"], wavs["voice"], api_name="/vc")]
    for path in outputs:
        audio, rate = soundfile.read(path)
        assert rate == 16000 and audio.ndim == 1 and len(audio) > 0  # the processor's (codec's) rate


@pytest.mark.parametrize("args, api, message", [
    (("", None), "/tts", "Please enter the text"),
    (("a" * 301, None), "/tts", "has 301 characters; the limit is 300"),
    (("long", None), "/asr", r"lasts 3\d\.\d s; the limit is 30 s"),
    (("silent", None), "/asr", "is silent"),
    ((None,), "/asr", "Please record or upload the speech"),
    (("speech", "   "), "/qa", "Please enter the question"),
    (("speech", None), "/vc", "Please record or upload the target voice"),
])
def test_bad_inputs_give_clear_errors(client, wavs, args, api, message):
    args = [wavs.get(arg, arg) if isinstance(arg, str) else arg for arg in args]
    with pytest.raises(AppError, match=message):
        client.predict(*args, api_name=api)


def test_prepare_audio_converts_to_16k_mono_and_rejects_bad_audio(app):
    t = np.arange(8000) / 8000
    tone = (0.5 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)
    mono = app.prepare_audio((8000, np.stack([tone, tone], 1)), "speech")  # gradio: int16 [samples, channels]
    assert mono.dtype == np.float32 and mono.shape == (16000,) and 0.45 < np.abs(mono).max() < 0.55
    nan = np.full(16000, np.nan, np.float32)
    with pytest.raises(gr.Error, match="invalid samples"):
        app.prepare_audio((16000, nan), "speech")
    with pytest.raises(gr.Error, match="too short"):
        app.prepare_audio((16000, np.zeros(0, np.float32)), "speech")


def test_model_source_order(app, monkeypatch, tmp_path):
    monkeypatch.delenv("DUALSPEECHLM_MODEL", raising=False)
    monkeypatch.setattr(app, "MODEL_ID_FILE", tmp_path / "model_id.txt")
    assert app.default_model_source() == str(Path(__file__).resolve().parents[1] / "models" / "dualspeechlm")
    (tmp_path / "model_id.txt").write_text("someone/dualspeechlm-tiny\n")
    assert app.default_model_source() == "someone/dualspeechlm-tiny"
    monkeypatch.setenv("DUALSPEECHLM_MODEL", "/some/folder")
    assert app.default_model_source() == "/some/folder"


def test_without_a_model_the_page_says_what_is_missing(app, tmp_path):
    missing = tmp_path / "no-model-here"
    demo = app.build_demo(missing)
    try:
        url = launch(demo)
        with urllib.request.urlopen(url.rstrip("/") + "/config", timeout=30) as response:
            config = json.load(response)
    finally:
        demo.close()
    shown = " ".join(str(c.get("props", {}).get("value", "")) for c in config["components"])
    for expected in ("No model loaded", f"there is no model folder at {missing}", "make quickstart",
                     "DUALSPEECHLM_MODEL"):
        assert expected in shown
    assert not [d for d in config["dependencies"] if d.get("api_name")]  # no tabs, so no broken endpoints
