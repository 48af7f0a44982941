"""transformers pipelines for a saved DualSpeechLM folder: speech recognition and speech synthesis.

    save_for_pipelines(model, processor, "my-dualspeechlm")
    asr = pipeline("automatic-speech-recognition", model="my-dualspeechlm", trust_remote_code=True)
    asr("clip.wav")                                      # {"text": "..."}; or an array with sampling_rate=
    tts = pipeline("text-to-speech", model="my-dualspeechlm", trust_remote_code=True)
    tts("anna saw the cat", voice="reference.wav")       # {"audio": np.ndarray [samples], "sampling_rate": int}

The folder's `config.json` names both pipelines in `custom_pipelines` (transformers' mechanism for pipelines
shipped as remote code); `PIPELINE_REGISTRY.register_pipeline` is not used, since it would replace transformers'
own "automatic-speech-recognition" pipeline for every model in the process. Each pipeline gets its
`DualSpeechLMProcessor` through AutoProcessor and runs one input at a time (the processor batches for direct use).
"""

from __future__ import annotations

import os

from transformers import Pipeline
from transformers.audio_utils import load_audio
from transformers.dynamic_module_utils import custom_object_save


def read_audio(inputs, sampling_rate: int | None, file_rate: int):
    """(samples, rate) of a file path (decoded and resampled to `file_rate`), a mono array at `sampling_rate`, or a
    dict `{"array" or "raw": samples, "sampling_rate": rate}` (the `datasets` Audio / transformers ASR convention)."""
    if isinstance(inputs, (str, os.PathLike)):
        if not os.path.isfile(inputs):
            raise ValueError(f"no audio file at {str(inputs)!r}")
        return load_audio(str(inputs), sampling_rate=file_rate), file_rate
    if isinstance(inputs, dict):
        if "sampling_rate" not in inputs or not ({"array", "raw"} & set(inputs)):
            raise ValueError(f'an audio dict needs "array" (or "raw") and "sampling_rate", got keys {sorted(inputs)}')
        return inputs.get("array", inputs.get("raw")), inputs["sampling_rate"]
    return inputs, sampling_rate


class DualSpeechLMPipeline(Pipeline):
    """What both pipelines share: the processor (loaded through AutoProcessor) on the pipeline's device, and
    generation arguments given as `generate_kwargs` at construction or call time."""

    _load_processor = True
    _load_tokenizer = False
    _load_feature_extractor = False
    _load_image_processor = False
    _load_video_processor = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.processor is None:
            raise ValueError(f"{type(self).__name__} needs processor=DualSpeechLMProcessor(...)")
        self.processor.to(self.device)

    def _sanitize_parameters(self, sampling_rate=None, generate_kwargs=None, **preprocess_params):
        preprocess = {**preprocess_params, **({"sampling_rate": sampling_rate} if sampling_rate is not None else {})}
        return preprocess, ({"generate_kwargs": generate_kwargs} if generate_kwargs else {}), {}

    def audio_input(self, inputs, sampling_rate: int | None):
        return read_audio(inputs, sampling_rate, self.processor.feature_extractor.sampling_rate)


class DualSpeechLMSpeechRecognitionPipeline(DualSpeechLMPipeline):
    """`pipe(audio, sampling_rate=None, generate_kwargs=None) -> {"text": str}`. `audio`: a file path, a mono array
    (give `sampling_rate`) or `{"array": ..., "sampling_rate": ...}`. Greedy decoding of up to 128 tokens unless
    `generate_kwargs` says otherwise."""

    def preprocess(self, inputs, sampling_rate: int | None = None):
        audio, sampling_rate = self.audio_input(inputs, sampling_rate)
        return self.processor(task="asr", audio=audio, sampling_rate=sampling_rate)

    def _forward(self, model_inputs, generate_kwargs: dict | None = None):
        tokenizer, prompt = self.processor.tokenizer, model_inputs["input_ids"]
        settings = dict(do_sample=False, num_beams=1, max_new_tokens=128, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id)
        generated = self.model.generate(input_ids=prompt, attention_mask=model_inputs["attention_mask"],
                                        **{**settings, **(generate_kwargs or {})})
        return {"tokens": generated[:, prompt.shape[1]:]}

    def postprocess(self, model_outputs):
        return {"text": self.processor.decode_text(model_outputs["tokens"])[0]}


class DualSpeechLMTextToSpeechPipeline(DualSpeechLMPipeline):
    """`pipe(text, voice=None, voice_sampling_rate=None, task="tts", language=None, generate_kwargs=None) ->
    {"audio": np.ndarray [samples] float32, "sampling_rate": int}`.

    `voice`: reference audio of the target speaker (file path, array + `voice_sampling_rate`, or an audio dict),
    embedded by the folder's speaker encoder; without it, the processor's `default_speaker_embedding()` (a neutral
    synthetic voice). `task="t2st"` with `language` speaks a translation.
    `generate_kwargs` go to `generate(..., output_audio=True)` (e.g. `max_new_tokens`, `acoustic_max_new_tokens`,
    `do_sample`). The audio, at the rate of the model's codec, is empty where the model wrote no speech."""

    def _sanitize_parameters(self, voice=None, voice_sampling_rate=None, task=None, language=None, **kwargs):
        given = dict(voice=voice, voice_sampling_rate=voice_sampling_rate, task=task, language=language)
        return super()._sanitize_parameters(**{k: v for k, v in given.items() if v is not None}, **kwargs)

    def preprocess(self, text, voice=None, voice_sampling_rate: int | None = None, task: str = "tts", language=None):
        if not isinstance(text, str):
            raise ValueError(f"text-to-speech reads one text (str) per call, got {type(text).__name__}; pass a list "
                             "of texts to run several")
        inputs = self.processor(task=task, text=text, language=language)
        if voice is None:
            inputs["speaker_embeddings"] = self.processor.default_speaker_embedding()
        else:
            audio, sampling_rate = self.audio_input(voice, voice_sampling_rate)
            inputs["speaker_embeddings"] = self.processor.speaker_embedding(audio, sampling_rate)
        return inputs

    def _forward(self, model_inputs, generate_kwargs: dict | None = None):
        output = self.model.generate(
            model_inputs["input_ids"], attention_mask=model_inputs["attention_mask"],
            condition_mask=model_inputs["condition_mask"], speaker_embeddings=model_inputs["speaker_embeddings"],
            output_audio=True, **(generate_kwargs or {}))
        return {"audio": output.audio_arrays()[0]}

    def postprocess(self, model_outputs):
        return {"audio": model_outputs["audio"], "sampling_rate": self.model.config.codec_sampling_rate}


PIPELINES = {
    "automatic-speech-recognition": DualSpeechLMSpeechRecognitionPipeline,
    "text-to-speech": DualSpeechLMTextToSpeechPipeline,
    "text-to-audio": DualSpeechLMTextToSpeechPipeline,  # transformers' canonical name of text-to-speech
}


def save_for_pipelines(model, processor, save_directory: str | os.PathLike) -> None:
    """Save `model` and `processor` into `save_directory` so that `pipeline(task, model=save_directory,
    trust_remote_code=True)` works for every task in `PIPELINES`: the model (with `custom_pipelines` in its config),
    the processor and its sub-models (`DualSpeechLMProcessor.save_pretrained`), and this file. The tokenizer's
    `model_max_length` is capped at the backbone's positions, so too long inputs fail in the processor, clearly."""
    module = __name__.rsplit(".", 1)[-1]
    model.config.custom_pipelines = {task: {"impl": f"{module}.{cls.__name__}", "pt": ["AutoModel"]}
                                     for task, cls in PIPELINES.items()}
    limit = getattr(model.config.text_config, "max_position_embeddings", None)
    if limit is not None:
        processor.tokenizer.model_max_length = min(processor.tokenizer.model_max_length, limit)
    model.save_pretrained(save_directory)
    processor.save_pretrained(save_directory)
    custom_object_save(DualSpeechLMPipeline, save_directory)  # this file and what it imports


__all__ = ["DualSpeechLMSpeechRecognitionPipeline", "DualSpeechLMTextToSpeechPipeline", "PIPELINES", "read_audio",
           "save_for_pipelines"]
