"""DualSpeechLMProcessor: raw audio and text in, model inputs out; generated ids back to text.

    audio ──USTokenizerFeatureExtractor──> log-mel ──USTokenizerModel.encode──> USToken ids (25 Hz)
          (or, for the paper's Baseline-Acoustic, checked audio ──CodecTokensModel.tokenize──> codec token ids)
    ids + text fields ──build_inputs (tasks.build_inputs: the eight prompts)──> input_ids, condition_mask, ...
    generated text ids ──tokenizer──> text
    reference audio ──speaker encoder──> speaker embedding (the target voice)

Audio comes out of the model itself (`generate(..., output_audio=True)`), whose codec is one of its sub-models.
A model folder holds the text tokenizer at its top and the other parts in subfolders, each loadable on its own:
`ustokenizer/` (USTokenizer model + feature extractor) and `speaker_encoder/` (optional). This is the layout the
stage-3 recipe writes, so `from_pretrained` opens those folders too.

Imports only torch, torchaudio, numpy, transformers and this folder (relatively), so a saved folder's processor
loads with `AutoProcessor.from_pretrained(folder, trust_remote_code=True)` where the package is absent.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch
import torchaudio
from transformers import AutoTokenizer, BatchFeature, ProcessorMixin
from transformers.dynamic_module_utils import custom_object_save
from transformers.utils import PROCESSOR_NAME, cached_file

from .configuration_dualspeechlm import DualSpeechLMConfig, speech_token_strings
from .feature_extraction_ustokenizer import USTokenizerFeatureExtractor
from .modeling_codec_tokens import load_speech_tokenizer
from .registration import register_processor
from .speaker_encoder import SpeakerEncoderModel
from .tasks import build_inputs, get_task

SUBFOLDERS = ("ustokenizer", "speaker_encoder")


def neutral_voice(sampling_rate: int = 16000, seconds: float = 2.0) -> np.ndarray:
    """A synthetic voiced sound, float32 `[samples]`: a 120 Hz buzz with a pitch contour through three vowel
    formants, in syllable-like bursts. Its speaker embedding is the voice of speech generated without a reference."""
    t = np.arange(int(sampling_rate * seconds)) / sampling_rate
    phase = 2 * np.pi * np.cumsum(120 + 20 * np.sin(2 * np.pi * 0.7 * t)) / sampling_rate
    buzz = torch.from_numpy(sum(np.sin(k * phase) / k for k in range(1, 40))).float()
    vowel = sum(torchaudio.functional.bandpass_biquad(buzz, sampling_rate, f, Q=5.0) for f in (700, 1200, 2600))
    voiced = vowel.numpy() * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    return (0.5 * voiced / np.abs(voiced).max()).astype(np.float32)
HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision")


def has_subfolder(path, subfolder: str, **hub_kwargs) -> bool:
    """Whether `path` (a folder or Hub repo) holds `subfolder/config.json`."""
    return cached_file(path, "config.json", subfolder=subfolder, _raise_exceptions_for_missing_entries=False,
                       _raise_exceptions_for_connection_errors=False, **hub_kwargs) is not None


class DualSpeechLMProcessor(ProcessorMixin):
    r"""Builds DualSpeechLM inputs for the eight tasks and decodes its outputs.

    Args:
        feature_extractor ([`USTokenizerFeatureExtractor`]): raw audio -> log-mel.
        tokenizer (`PreTrainedTokenizerBase`): the text tokenizer holding `<audio>`, `</audio>`, `<a_0>`..`<a_{K-1}>`
            (what `DualSpeechLMForConditionalGeneration.from_text_model` adds), K = the USTokenizer's codebook size.
        ustokenizer ([`USTokenizerModel`] or [`CodecTokensModel`]): log-mel -> USToken ids, or audio -> codec token
            ids (a model that `reads_waveforms`).
        speaker_encoder ([`SpeakerEncoderModel`], optional): reference audio -> speaker embedding.
    """

    def __init__(self, feature_extractor, tokenizer, ustokenizer, speaker_encoder=None):
        super().__init__(feature_extractor, tokenizer)
        self.ustokenizer, self.speaker_encoder = ustokenizer, speaker_encoder
        # the speech token ids `tasks.build_inputs` reads from a DualSpeechLMConfig, here from the tokenizer
        self.num_speech_tokens = ustokenizer.config.codebook_size
        strings = speech_token_strings(self.num_speech_tokens)
        ids = tokenizer.convert_tokens_to_ids(strings)
        self.audio_start_token_id, self.audio_end_token_id, self.speech_token_offset = ids[:3]
        if tokenizer.unk_token_id in ids or ids[2:] != list(range(ids[2], ids[2] + self.num_speech_tokens)):
            raise ValueError(f"the tokenizer must hold {strings[0]}, {strings[1]} and {strings[2]}..{strings[-1]} "
                             f"(the USTokenizer's {self.num_speech_tokens} codes) at consecutive ids: build it "
                             "with DualSpeechLMForConditionalGeneration.from_text_model(llm, tokenizer, "
                             "num_speech_tokens=K)")

    @classmethod
    def get_attributes(cls) -> list[str]:
        return ["feature_extractor", "tokenizer"]  # the sub-models are saved apart, in their subfolders

    def to_dict(self) -> dict:
        return {"processor_class": type(self).__name__}

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> list[str]:
        """The text tokenizer at the top of `save_directory`, the other parts in their subfolders (safetensors), plus
        `processor_config.json` and this file (with what it imports) for `AutoProcessor` with trust_remote_code."""
        os.makedirs(save_directory, exist_ok=True)
        self.tokenizer.save_pretrained(save_directory)
        self.feature_extractor.save_pretrained(os.path.join(save_directory, "ustokenizer"))
        for name in SUBFOLDERS:
            if (part := getattr(self, name)) is not None:
                part.save_pretrained(os.path.join(save_directory, name), **kwargs)
        config = self.to_dict()
        custom_object_save(self, save_directory, config=config)
        path = os.path.join(save_directory, PROCESSOR_NAME)
        with open(path, "w") as f:
            json.dump(config, f, indent=2)
        return [path]

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, trust_remote_code: bool | None = None, **kwargs):
        """Load from a model folder or Hub repo (module docstring). Parts given as keyword arguments
        (`speaker_encoder=`, ...) replace the saved ones. (`trust_remote_code` is accepted for AutoProcessor's sake:
        every part's code is this file's.)"""
        path, hub = pretrained_model_name_or_path, {k: kwargs[k] for k in HUB_KWARGS if k in kwargs}
        parts = {name: kwargs[name] for name in ("feature_extractor", "tokenizer", *SUBFOLDERS) if name in kwargs}
        ustokenizer_at = dict(subfolder="ustokenizer", **hub)
        loaders = {
            "tokenizer": lambda: AutoTokenizer.from_pretrained(path, **hub),
            "feature_extractor": lambda: USTokenizerFeatureExtractor.from_pretrained(path, **ustokenizer_at),
            "ustokenizer": lambda: load_speech_tokenizer(path, **ustokenizer_at),
            "speaker_encoder": lambda: SpeakerEncoderModel.from_pretrained(path, subfolder="speaker_encoder", **hub),
        }
        for name, load in loaders.items():
            if name not in parts and (name != "speaker_encoder" or has_subfolder(path, name, **hub)):
                parts[name] = load()
        return cls(**{name: part.eval() if isinstance(part, torch.nn.Module) else part
                      for name, part in parts.items()})

    def to(self, device: str | torch.device) -> DualSpeechLMProcessor:
        """Move the sub-models (USTokenizer, speaker encoder) to `device`."""
        for name in SUBFOLDERS:
            if (part := getattr(self, name)) is not None:
                part.to(device)
        return self

    def require(self, name: str):
        """The optional part `name` ("speaker_encoder"), or a clear error where there is none."""
        if getattr(self, name) is None:
            raise ValueError(f"this processor has no {name} (the `{name}/` subfolder of a model folder); load one or "
                             f"pass {name}= to DualSpeechLMProcessor")
        return getattr(self, name)

    def build_inputs(self, examples: list[dict], with_answers: bool, padding_side: str = "right") -> BatchFeature:
        """Token sequences of task examples, for training (`with_answers`, right padding) or generation (left padding).

        Each example: `task` (one of the eight), the text fields its prompt needs (`text`, `question`, `language`),
        `speech_ids` (USToken ids 0..K-1 of the input speech, for tasks with speech input) and, with answers,
        `answer` (text, understanding tasks) or `answer_speech_ids` (USToken ids, generation tasks).
        Returns `input_ids`, `attention_mask`, `condition_mask` (the prompt) `[batch, longest]`, `labels` (answer +
        EOS, -100 elsewhere; with answers) and `tasks` (`list[str]`); see `tasks.build_inputs`.
        """
        for index, example in enumerate(examples):
            for key in ("speech_ids", "answer_speech_ids"):
                ids = np.asarray(example.get(key, []))
                if ids.size and (ids.min() < 0 or ids.max() >= self.num_speech_tokens):
                    raise ValueError(f"example {index}: {key} must be USToken ids in [0, {self.num_speech_tokens}), "
                                     f"got values in [{ids.min()}, {ids.max()}]")
        batch = build_inputs(self.tokenizer, self, examples, with_answers, padding_side)  # self: the speech token ids
        limit = self.tokenizer.model_max_length
        for index, length in enumerate(batch["attention_mask"].sum(-1).tolist()):
            if length > limit:
                raise ValueError(f"example {index} ({examples[index]['task']}) is {length} tokens long, more than the "
                                 f"model's maximum of {limit}; shorten its text or audio")
        return BatchFeature(batch)

    def speech_ids(self, audio, sampling_rate: int | None) -> list[list[int]]:
        """USToken ids (25 per second) of one mono clip or a list of clips (arrays / tensors / lists of floats); the
        codec's token ids where the speech tokenizer `reads_waveforms`."""
        if getattr(self.ustokenizer, "reads_waveforms", False):
            return self.ustokenizer.tokenize(self.feature_extractor.waveforms(audio, sampling_rate))
        features = self.feature_extractor(audio, sampling_rate=sampling_rate, return_tensors="pt")
        model = self.ustokenizer
        encoded = model.encode(features["input_features"].to(model.device, model.dtype),
                               features["attention_mask"].to(model.device))
        return [ids[:length].tolist() for ids, length in zip(encoded.ids, encoded.lengths.tolist())]

    def __call__(self, task: str | list[str], audio=None, sampling_rate: int | None = None, text=None, question=None,
                 language=None, return_tensors: str = "pt") -> BatchFeature:
        """Generation inputs (left-padded prompts, `build_inputs(..., with_answers=False, padding_side="left")`) of a
        batch: `audio` is one clip or a list of clips at `sampling_rate` (tokenized by the USTokenizer); `task`,
        `text`, `question`, `language` are one value for every item or a list with one per item."""
        if return_tensors != "pt":
            raise ValueError(f"the processor returns PyTorch tensors only ('pt'), "
                             f"got return_tensors={return_tensors!r}")
        for name in {task} if isinstance(task, str) else set(task):
            if get_task(name).speech_input and audio is None:
                raise ValueError(f"task {name!r} reads speech: pass audio= and sampling_rate=")
            if not get_task(name).speech_input and audio is not None:
                raise ValueError(f"task {name!r} reads text, not audio: pass text= and no audio")
        fields = {"task": task, "text": text, "question": question, "language": language}
        if audio is not None:
            fields["speech_ids"] = self.speech_ids(audio, sampling_rate)  # a list: one item per clip
        fields = {name: value for name, value in fields.items() if value is not None}
        batched = {name: len(value) for name, value in fields.items() if isinstance(value, (list, tuple))}
        if len(set(batched.values())) > 1:
            raise ValueError(f"batched arguments must have one entry per item, got lengths {batched}")
        size = next(iter(batched.values()), 1)
        examples = [{name: value[i] if name in batched else value for name, value in fields.items()}
                    for i in range(size)]
        return self.build_inputs(examples, with_answers=False, padding_side="left")

    def speaker_embedding(self, audio, sampling_rate: int | None) -> torch.Tensor:
        """Speaker embeddings `[batch, embedding_size]` of one reference clip or a list of clips at `sampling_rate`."""
        encoder = self.require("speaker_encoder")
        if sampling_rate is None:
            raise ValueError("sampling_rate is required: pass the rate the reference audio was recorded at")
        rate = encoder.config.sampling_rate
        clips = [torchaudio.functional.resample(clip, sampling_rate, rate) if sampling_rate != rate else clip
                 for clip in self.feature_extractor._as_items(audio)]  # its mono / float checks
        return encoder.embed(clips, sampling_rate=rate)

    def default_speaker_embedding(self) -> torch.Tensor:
        """`[1, embedding_size]`: the voice of speech generated without a reference, the embedding of
        `neutral_voice()`. A zero embedding will not do: understanding items train with it beside "no speech"."""
        rate = self.require("speaker_encoder").config.sampling_rate
        return self.speaker_embedding(neutral_voice(rate), rate)

    def decode_text(self, generated_ids) -> list[str]:
        """Text of generated ids `[batch, new_tokens]` (the tokens after the prompt), special tokens dropped."""
        return [text.strip() for text in self.tokenizer.batch_decode(generated_ids, skip_special_tokens=True)]


register_processor(DualSpeechLMConfig, DualSpeechLMProcessor)

__all__ = ["DualSpeechLMProcessor"]
