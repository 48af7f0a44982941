"""DualSpeechLM demo Space: speech recognition, speech synthesis, voice conversion, spoken QA and translation.

The model (a folder written by `save_for_pipelines`, or the Hub repo it was pushed to) is taken from, in order:
the `DUALSPEECHLM_MODEL` environment variable, `model_id.txt` beside this file (written when the Space is
published), or the repository's `models/dualspeechlm` (what `make quickstart` trains). It loads through
transformers with `trust_remote_code=True`: the folder carries its own code, so a Space installs only
`requirements.txt`. Without a model the app still starts, on a page that says what is missing.

Every tab calls one function with an `api_name` (`/asr`, `/tts`, `/vc`, `/qa`, `/translate`), so
`gradio_client.Client(url).predict(..., api_name="/asr")` works too. With `examples/examples.json` beside this file
(`dualspeechlm-space-examples`: clips and texts of the corpus' test splits) every tab gets clickable examples, and
the page says what the model was trained on and so what it will and will not understand; where the examples carry
items of the model's samples page, the TTS and VC tabs show them (log-mel picture, generated and reference speech).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import gradio as gr
import numpy as np
import torch
import torchaudio
from transformers import AutoModel, AutoProcessor

HERE = Path(__file__).resolve().parent
MODEL_ID_FILE = HERE / "model_id.txt"
EXAMPLES_DIR = HERE / "examples"
DEFAULT_MODEL = HERE.parent / "models" / "dualspeechlm"

SAMPLING_RATE = 16000  # what the USTokenizer and the speaker encoder read; other rates are resampled
MIN_AUDIO_S = 0.2
MAX_AUDIO_S = 30.0  # the USTokenizer's Whisper encoder reads at most 30 s
MAX_TEXT_CHARS = 300
SILENCE_PEAK = 1e-3  # audio whose loudest sample stays below this (-60 dBFS) is silent
MAX_ANSWER_TOKENS = 96  # text answers (transcripts, translations, QA answers)
SEED = 0  # speech is sampled with this seed: the same inputs give the same audio
QUEUE_SIZE = 16
LANGUAGES = {"Spanish": "es", "French": "fr"}  # the s2tt targets the model is trained on


def default_model_source() -> str:
    """Where the model is: `DUALSPEECHLM_MODEL`, else `model_id.txt`, else the local `models/dualspeechlm`."""
    if source := os.environ.get("DUALSPEECHLM_MODEL", "").strip():
        return source
    if MODEL_ID_FILE.is_file() and (source := MODEL_ID_FILE.read_text().strip()):
        return source
    return str(DEFAULT_MODEL)


def load_model(source: str):
    """(model, processor) of a model folder or Hub repo id; an exception that says what is missing otherwise."""
    path = Path(source).expanduser()
    if (path.is_absolute() or source.startswith((".", "~")) or path.exists()) and not path.is_dir():
        raise FileNotFoundError(f"there is no model folder at {path}")
    model = AutoModel.from_pretrained(source, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(source, trust_remote_code=True)
    if model.codec_model is None:
        raise ValueError("the model holds no codec (its config's codec_config is None), which the speech tabs need")
    if processor.speaker_encoder is None:
        raise ValueError("the model has no `speaker_encoder/` subfolder, which the speech tabs need")
    return model, processor


def load_examples(folder: Path = EXAMPLES_DIR) -> dict | None:
    """`examples.json` of `folder` with its clips' paths made absolute, or None where there is none."""
    path = folder / "examples.json"
    if not path.is_file():
        return None
    content = json.loads(path.read_text())
    content["examples"] = {tab: [[str(folder / value) if str(value).endswith(".wav") else value for value in row]
                                 for row in rows] for tab, rows in content["examples"].items()}
    content["heard"] = {tab: [{role: value if role == "caption" else str(folder / value)
                               for role, value in item.items()} for item in items]
                        for tab, items in content.get("heard", {}).items()}
    return content


def prepare_audio(audio: tuple[int, np.ndarray] | None, name: str) -> np.ndarray:
    """Gradio's `(rate, samples)` (int PCM or float, `[samples]` or `[samples, channels]`) -> float32 mono at
    SAMPLING_RATE. Raises gr.Error for missing, too short or long, non-finite and silent audio."""
    if audio is None:
        raise gr.Error(f"Please record or upload the {name}.")
    rate, samples = audio
    samples = np.asarray(samples)
    if np.issubdtype(samples.dtype, np.integer):
        samples = samples / (np.iinfo(samples.dtype).max + 1)
    samples = samples.astype(np.float32)
    if samples.ndim == 2:
        samples = samples.mean(axis=1)
    duration = len(samples) / rate
    if duration > MAX_AUDIO_S:
        raise gr.Error(f"The {name} lasts {duration:.1f} s; the limit is {MAX_AUDIO_S:g} s. Please trim it.")
    if duration < MIN_AUDIO_S:
        raise gr.Error(f"The {name} is empty or too short ({duration:.2f} s); please give at least {MIN_AUDIO_S:g} s.")
    if not np.isfinite(samples).all():
        raise gr.Error(f"The {name} contains invalid samples (NaN or infinite).")
    if np.abs(samples).max() < SILENCE_PEAK:
        raise gr.Error(f"The {name} is silent; please record or upload speech.")
    if rate != SAMPLING_RATE:
        samples = torchaudio.functional.resample(torch.from_numpy(samples), int(rate), SAMPLING_RATE).numpy()
    return samples


def prepare_text(text: str | None, name: str) -> str:
    """The stripped text; gr.Error when it is empty or longer than MAX_TEXT_CHARS."""
    text = (text or "").strip()
    if not text:
        raise gr.Error(f"Please enter the {name}.")
    if len(text) > MAX_TEXT_CHARS:
        raise gr.Error(f"The {name} has {len(text)} characters; the limit is {MAX_TEXT_CHARS}.")
    return text


class SpeechDemo:
    """A loaded model and processor, and the function behind each tab."""

    def __init__(self, model, processor):
        self.model, self.processor = model, processor
        self.max_positions = model.config.text_config.max_position_embeddings
        self.neutral_speaker = processor.default_speaker_embedding()

    @torch.inference_mode()
    def answer(self, task: str, audio: np.ndarray, **fields) -> str:
        """The greedy text answer of an understanding task."""
        tokenizer = self.processor.tokenizer
        try:
            inputs = self.processor(task=task, audio=audio, sampling_rate=SAMPLING_RATE, **fields)
            prompt = inputs["input_ids"]
            generated = self.model.generate(
                input_ids=prompt, attention_mask=inputs["attention_mask"], do_sample=False, num_beams=1,
                max_new_tokens=min(MAX_ANSWER_TOKENS, self.max_positions - prompt.shape[1]),
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        except ValueError as error:  # the processor's and model's input checks say what is wrong
            raise gr.Error(str(error)) from error
        return self.processor.decode_text(generated[:, prompt.shape[1]:])[0]

    @torch.inference_mode()
    def speak(self, task: str, voice: np.ndarray | None, audio: np.ndarray | None = None, **fields):
        """`(rate, int16 samples)` of a generation task in the voice of `voice` (the neutral voice when None)."""
        try:
            speaker = self.neutral_speaker if voice is None else self.processor.speaker_embedding(voice, SAMPLING_RATE)
            inputs = self.processor(task=task, audio=audio, sampling_rate=SAMPLING_RATE if audio is not None else None,
                                    **fields)
            torch.manual_seed(SEED)
            output = self.model.generate(
                inputs["input_ids"], attention_mask=inputs["attention_mask"], condition_mask=inputs["condition_mask"],
                speaker_embeddings=speaker, output_audio=True)
        except ValueError as error:
            raise gr.Error(str(error)) from error
        waveform = output.audio_arrays()[0]
        if waveform.size == 0:
            raise gr.Error("The model wrote no speech for this input; try another text or reference voice.")
        return self.model.config.codec_sampling_rate, (np.clip(waveform, -1, 1) * 32767).astype(np.int16)

    def transcribe(self, audio):
        """ASR: speech -> transcript."""
        return self.answer("asr", prepare_audio(audio, "speech"))

    def synthesize(self, text, voice):
        """TTS: text (+ optional reference voice) -> speech."""
        text = prepare_text(text, "text")
        return self.speak("tts", None if voice is None else prepare_audio(voice, "reference voice"), text=text)

    def convert(self, source, voice):
        """VC: source speech + target voice -> the same words in the target voice."""
        source = prepare_audio(source, "source speech")
        return self.speak("vc", prepare_audio(voice, "target voice"), audio=source)

    def answer_question(self, audio, question):
        """SQA: speech + a question about it -> text answer."""
        question = prepare_text(question, "question")
        return self.answer("sqa", prepare_audio(audio, "speech"), question=question)

    def translate(self, audio, language):
        """S2TT: speech -> text in the chosen language."""
        if language not in LANGUAGES.values():
            raise gr.Error(f"Please choose a target language: {', '.join(LANGUAGES)}.")
        return self.answer("s2tt", prepare_audio(audio, "speech"), language=language)


def audio_input(label: str, **kwargs) -> gr.Audio:
    return gr.Audio(sources=["upload", "microphone"], type="numpy", label=label, **kwargs)


def examples_of(examples: dict | None, tab: str, inputs: list) -> None:
    """Clickable examples under a tab's inputs, when the Space has examples for it."""
    if examples and examples["examples"].get(tab):
        gr.Examples(examples["examples"][tab], inputs, label="Examples from the test set (click one)",
                    elem_id=f"{tab}-examples")


def heard_on_test_set(examples: dict | None, tab: str) -> None:
    """The samples page's items of a tab (`examples["heard"]`): how the model speaks on its own test set, as a
    log-mel picture (generated above reference) and the two recordings, in a closed accordion."""
    if not (examples and examples["heard"].get(tab)):
        return
    with gr.Accordion("How it speaks on its test set", open=False, elem_id=f"{tab}-heard"):
        for item in examples["heard"][tab]:
            gr.Markdown(item["caption"])
            with gr.Row():
                if "log_mel" in item:
                    gr.Image(item["log_mel"], label="log-mel: generated (top), reference (bottom)",
                             interactive=False)
                with gr.Column():
                    if "generated" in item:
                        gr.Audio(item["generated"], label="generated", interactive=False)
                    gr.Audio(item["reference"], label="reference recording", interactive=False)


def speech_tabs(speech: SpeechDemo, examples: dict | None = None) -> None:
    """The five tabs, each a button calling one SpeechDemo function under its `api_name`, with `examples`
    (`load_examples()`) under its inputs."""
    if examples:
        gr.Markdown(f"**What this model knows.** {examples['note']} The examples below come from its test set.")
    gr.Markdown(f"Audio: {MIN_AUDIO_S:g}–{MAX_AUDIO_S:g} s, any sample rate, mono or stereo. "
                f"Text: at most {MAX_TEXT_CHARS} characters.")
    with gr.Tab("Speech recognition"):
        audio = audio_input("Speech", elem_id="asr-input")
        button = gr.Button("Transcribe", variant="primary")
        transcript = gr.Textbox(label="Transcript", elem_id="asr-output")
        button.click(speech.transcribe, audio, transcript, api_name="asr")
        examples_of(examples, "asr", [audio])
    with gr.Tab("Text to speech"):
        text = gr.Textbox(label="Text", max_length=MAX_TEXT_CHARS, placeholder="anna saw the cat", elem_id="tts-input")
        voice = audio_input("Reference voice (optional: a neutral synthetic voice without it)")
        button = gr.Button("Synthesize", variant="primary")
        spoken = gr.Audio(label="Speech", type="numpy", interactive=False, elem_id="tts-output")
        button.click(speech.synthesize, [text, voice], spoken, api_name="tts")
        examples_of(examples, "tts", [text, voice])
        heard_on_test_set(examples, "tts")
    with gr.Tab("Voice conversion"):
        source, voice = audio_input("Source speech"), audio_input("Target voice")
        button = gr.Button("Convert", variant="primary")
        converted = gr.Audio(label="Converted speech", type="numpy", interactive=False)
        button.click(speech.convert, [source, voice], converted, api_name="vc")
        examples_of(examples, "vc", [source, voice])
        heard_on_test_set(examples, "vc")
    with gr.Tab("Spoken QA"):
        audio = audio_input("Speech")
        question = gr.Textbox(label="Question about the speech", max_length=MAX_TEXT_CHARS)
        button = gr.Button("Answer", variant="primary")
        answer = gr.Textbox(label="Answer")
        button.click(speech.answer_question, [audio, question], answer, api_name="qa")
        examples_of(examples, "qa", [audio, question])
    with gr.Tab("Translation"):
        audio = audio_input("English speech")
        language = gr.Dropdown(list(LANGUAGES.items()), value="es", label="Target language")
        button = gr.Button("Translate", variant="primary")
        translation = gr.Textbox(label="Translation")
        button.click(speech.translate, [audio, language], translation, api_name="translate")
        examples_of(examples, "translate", [audio, language])


def missing_model_page(source: str, error: Exception) -> None:
    gr.Markdown(
        f"## No model loaded\n\nThe demo could not load a DualSpeechLM model from `{source}`:\n\n"
        f"> {type(error).__name__}: {' '.join(str(error).split())}\n\nTo get one, either\n\n"
        "- train the tiny model of this repository with `make quickstart` (it writes `models/dualspeechlm`), "
        "then restart the app, or\n"
        "- set the `DUALSPEECHLM_MODEL` environment variable to a model folder or a Hub repo id, e.g. "
        "`DUALSPEECHLM_MODEL=you/dualspeechlm python app.py`.")


def build_demo(model_source: str | os.PathLike | None = None, examples_dir: Path = EXAMPLES_DIR) -> gr.Blocks:
    """The app on the model at `model_source` (default: `default_model_source()`), with the examples in
    `examples_dir` where it has them, queued one request at a time."""
    source = str(model_source or default_model_source())
    try:
        speech, failure = SpeechDemo(*load_model(source)), None
    except Exception as error:  # any failure to load ends on the explanatory page, never in a crash
        speech, failure = None, error
    with gr.Blocks(title="DualSpeechLM") as demo:
        gr.Markdown("# DualSpeechLM\nOne speech LLM that understands and generates speech "
                    "([arXiv 2508.08961](https://arxiv.org/abs/2508.08961)).")
        if speech is None:
            missing_model_page(source, failure)
        else:
            local = Path(source).expanduser().is_dir()
            gr.Markdown(f"Model: `{source}`" if local else f"Model: [{source}](https://huggingface.co/{source})")
            speech_tabs(speech, load_examples(Path(examples_dir)))
    return demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=1)


if __name__ == "__main__":
    build_demo().launch()
