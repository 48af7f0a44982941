"""DualSpeechLM (arXiv 2508.08961): any causal LM reading USTokens as text, plus AcousticGPT writing codec codes,
plus the codec that turns them into audio.

    input_ids [batch, L] (text + `<audio><a_k>...</audio>`) -> backbone LLM -> logits [batch, L, vocab]
                                                             -> final hidden states [batch, L, llm_hidden]
    AcousticGPT prefix = [speaker embedding, hidden states at the condition positions] -> codes [batch, n_q, T]
    codec_model: codes [batch, n_q, T] -> waveforms [batch, samples]

Training (`forward` with `labels`): loss = llm_loss_weight * LLM CE (text answers, or the target USTokens of a
generation task: the semantic supervision) + acoustic_loss_weight * AcousticGPT CE. Understanding items teach
AcousticGPT [BOS, no-speech, EOS] with a zero speaker embedding, so every batch trains both models; with
acoustic_loss_weight 0 AcousticGPT is not run at all, and the model speaks only through a codec that decodes the
USTokens alone.

Chain-of-Condition (CoC): for items of `config.coc_tasks` in training mode the condition positions are the prompt
(`condition_mask`), the target USTokens (labels that are USTokens) or both, drawn per item with equal probability
from `config.coc_modes` with torch's global RNG (seed it with `torch.manual_seed` / `transformers.set_seed`; pass
`coc_modes` to choose). Other items, and every item in eval mode, use both, as inference does.

Generation: text through the standard `generate()` (the cache and input preparation are the backbone's);
speech through `generate(..., output_audio=True)` (= `generate_speech(..., output_audio=True)`): USTokens
(restricted to `<a_k>` and `</audio>`), one re-encoding pass for the hidden states of the whole sequence, then
AcousticGPT; both with KV caches, batched (prompts left-padded); then the codec.

The codec is a sub-model, as in transformers' CSM: `config.codec_config` builds `codec_model`, whose weights are
saved and loaded with the model's (kept in float32 under a lower `dtype`), so a model always speaks through the
codec whose codes its AcousticGPT was trained on. A codec that `decodes_ustokens_alone` (the semantic-only
baseline's decoder, which reads the written USTokens and the voice) makes the model speak without AcousticGPT.

Imports only torch, transformers and this folder (relatively), so a saved folder loads with trust_remote_code.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import AutoModel, AutoModelForCausalLM, GenerationConfig, GenerationMixin, PreTrainedModel
from transformers.generation.logits_process import LogitsProcessor, LogitsProcessorList
from transformers.utils import ModelOutput

from .codec_auto import codec_from_config
from .configuration_dualspeechlm import COC_MODES, DualSpeechLMConfig, speech_token_strings
from .modeling_acoustic_gpt import AcousticGPT
from .registration import register_auto_classes

PROMPT, TARGET, BOTH = (COC_MODES.index(mode) for mode in ("prompt", "target", "both"))


@dataclass
class DualSpeechLMOutput(ModelOutput):
    """loss = weighted llm_loss + acoustic_loss when `labels` are given; logits `[batch, L, vocab]`; cache: the
    backbone's KV cache; acoustic_logits `[batch, steps, n_q, vocab]`; acoustic_condition_mask `[batch, L]`: the LLM
    positions whose hidden states formed each item's AcousticGPT prefix; coc_modes `[batch]`: index into COC_MODES."""

    loss: torch.FloatTensor | None = None
    llm_loss: torch.FloatTensor | None = None
    acoustic_loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    cache: object | None = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None
    acoustic_logits: torch.FloatTensor | None = None
    acoustic_condition_mask: torch.BoolTensor | None = None
    coc_modes: torch.LongTensor | None = None


@dataclass
class DualSpeechLMSpeechOutput(ModelOutput):
    """sequences `[batch, L + new]`: prompt + `<audio>` + USTokens + `</audio>` (then pad); ustokens `[batch, U]` and
    ustoken_lengths `[batch]`: the USToken ids (0..K-1) written after the last `<audio>`; speaker_embeddings
    `[batch, speaker_embedding_size]`: the voice it was asked for (None when none was given); codes `[batch, n_q, T]`
    and code_lengths `[batch]` (0: AcousticGPT wrote no-speech; both None when the model's codec
    `decodes_ustokens_alone`, for then AcousticGPT does not run); waveforms `[batch, samples]` at
    `config.codec_sampling_rate` and waveform_lengths `[batch]` with `output_audio=True`."""

    sequences: torch.LongTensor | None = None
    ustokens: torch.LongTensor | None = None
    ustoken_lengths: torch.LongTensor | None = None
    speaker_embeddings: torch.FloatTensor | None = None
    codes: torch.LongTensor | None = None
    code_lengths: torch.LongTensor | None = None
    waveforms: torch.FloatTensor | None = None
    waveform_lengths: torch.LongTensor | None = None

    def audio_arrays(self) -> list[np.ndarray]:
        """One float32 waveform per item, its padding cut (empty where no speech was written); needs `waveforms`."""
        if self.waveforms is None:
            raise ValueError("no waveforms: generate with output_audio=True")
        return audio_arrays(self.waveforms, self.waveform_lengths)


def audio_arrays(waveforms: torch.Tensor, lengths: torch.Tensor) -> list[np.ndarray]:
    """Padded waveforms `[batch, samples]` + sample lengths `[batch]` -> one float32 array per item, padding cut."""
    return [waveform[:length].float().cpu().numpy() for waveform, length in zip(waveforms, lengths.tolist())]


class SpeechTokensOnly(LogitsProcessor):
    """Lets the LLM write only USTokens `<a_k>` and `</audio>`: the answer of a speech task."""

    def __init__(self, config: DualSpeechLMConfig):
        self.config = config

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        ids = torch.arange(scores.shape[-1], device=scores.device)
        allowed = self.config.is_speech_token(ids) | (ids == self.config.audio_end_token_id)
        return scores.masked_fill(~allowed, float("-inf"))


def positions_from_mask(attention_mask: torch.Tensor, length: int) -> torch.LongTensor:
    """Position ids of the last `length` tokens counting attended tokens only (left padding keeps them equal to an
    unpadded item's), as `generate()` computes them."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -length:]


def packed_left(values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.LongTensor, torch.LongTensor]:
    """values `[batch, L]` at the True positions of mask `[batch, L]`, in order and moved left -> (`[batch, max(1,
    count)]`, zero past each count; counts `[batch]`)."""
    counts = mask.sum(-1)
    order = torch.argsort((~mask.bool()).to(torch.int8), dim=1, stable=True)
    packed = values.gather(1, order)[:, : max(int(counts.max()), 1)]
    return packed * (torch.arange(packed.shape[1], device=packed.device) < counts[:, None]), counts


def codec_decoder_inputs(codec, ustokens=None, ustoken_lengths=None, speaker_embeddings=None) -> dict:
    """The keyword arguments of `codec.decode` that `codec` reads, among those given: the written USTokens (+ lengths)
    for a codec with `ustoken_vocab_size`, the voice for one with `speaker_embedding_size`; a plain codec gets none."""
    inputs = {}
    if ustokens is not None and getattr(codec, "ustoken_vocab_size", None) is not None:
        inputs.update(ustokens=ustokens, ustoken_lengths=ustoken_lengths)
    if speaker_embeddings is not None and getattr(codec, "speaker_embedding_size", None) is not None:
        inputs["speaker_embeddings"] = speaker_embeddings
    return inputs


def check_shape(name: str, tensor: torch.Tensor | None, *shape: int) -> None:
    if tensor is not None and tuple(tensor.shape) != shape:
        raise ValueError(f"{name} must have shape {list(shape)}, got {list(tensor.shape)}")


class DualSpeechLMForConditionalGeneration(PreTrainedModel, GenerationMixin):
    """The backbone LLM (`language_model`, any AutoModelForCausalLM), AcousticGPT (`acoustic_gpt`) and the codec
    (`codec_model`, a `SpeechCodecMixin`; None when `config.codec_config` is None). The codec is frozen: training
    never changes it."""

    config_class = DualSpeechLMConfig
    main_input_name = "input_ids"
    _keep_in_fp32_modules_strict = ["codec_model"]  # spectral transforms and vocoders want float32
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def __init__(self, config: DualSpeechLMConfig, language_model: PreTrainedModel | None = None):
        super().__init__(config)
        if language_model is None:
            language_model = AutoModelForCausalLM.from_config(config.text_config)
        self.language_model = language_model
        self.config.text_config = self.language_model.config  # one object: resizing the embeddings updates both
        self.acoustic_gpt = AcousticGPT(config.acoustic_config)
        self.codec_model = None
        if config.codec_config is not None:
            self.set_codec(codec_from_config(config.codec_config, config.num_codebooks, config.codec_sampling_rate))
        self.post_init()

    def set_codec(self, codec) -> None:
        """Make `codec` (a `SpeechCodecMixin`, e.g. from `load_codec`) the model's `codec_model` (frozen, in eval mode,
        on the model's device) and its config `config.codec_config`. It must read the codes this model's AcousticGPT
        writes (same codebooks, codes, frame and sampling rate), e.g. the embedded codec's decoder retrained to read
        the USTokens too (`dualspeechlm-set-codec`)."""
        config = self.config
        has = (codec.num_codebooks, codec.codebook_size, float(codec.frame_rate), int(codec.sampling_rate))
        wants = (config.num_codebooks, config.codebook_size, config.codec_frame_rate, config.codec_sampling_rate)
        if has != wants:
            raise ValueError(f"the codec reads {has[0]} codebook(s) of {has[1]} codes at {has[2]:g} frames/s and "
                             f"{has[3]} Hz audio, this model's AcousticGPT writes {wants[0]} of {wants[1]} at "
                             f"{wants[2]:g} frames/s for {wants[3]} Hz: use reset_acoustic_gpt(codec) to move the "
                             "model onto another codec")
        config.codec_config = codec.codec_config
        self.codec_model = codec.requires_grad_(False).eval().to(self.device)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`, the codec frozen again (loading makes every parameter trainable)."""
        model = super().from_pretrained(*args, **kwargs)
        if model.codec_model is not None:
            model.codec_model.requires_grad_(False)
        return model

    def reset_acoustic_gpt(self, codec) -> None:
        """Move the model onto another codec: a fresh AcousticGPT shaped for `codec`'s codes (to be trained), and
        `codec` as the model's; the LLM is kept."""
        acoustic = self.config.acoustic_config
        acoustic.num_codebooks, acoustic.codebook_size = codec.num_codebooks, codec.codebook_size
        self.config.codec_frame_rate = float(codec.frame_rate)
        self.config.codec_sampling_rate = int(codec.sampling_rate)
        self.acoustic_gpt = AcousticGPT(acoustic).to(self.device)
        self.set_codec(codec)

    def train(self, mode: bool = True):
        """As `nn.Module.train`, but the codec stays in eval mode (its quantizer would update its codebooks)."""
        super().train(mode)
        if self.codec_model is not None:
            self.codec_model.eval()
        return self

    @classmethod
    def from_text_model(cls, text_model: PreTrainedModel, tokenizer=None, num_speech_tokens: int = 1024,
                        pad_to_multiple_of: int | None = None, codec=None,
                        **config_kwargs) -> DualSpeechLMForConditionalGeneration:
        """Wrap a (pretrained) causal LM. `<audio>`, `</audio>`, `<a_0>`..`<a_{K-1}>` are added to `tokenizer` (when
        given; otherwise their ids follow the LLM's vocabulary), the embeddings grow to hold them (new rows: the mean
        of the old ones), and a fresh AcousticGPT joins, writing the codes of `codec` (a `SpeechCodecMixin`, e.g. from
        `load_codec`, which becomes `codec_model` with its weights). `config_kwargs` go to DualSpeechLMConfig
        (`acoustic_config`, ...; `num_codebooks`, `codebook_size`, `codec_frame_rate` ... where no codec is given)."""
        strings = speech_token_strings(num_speech_tokens)
        vocab = text_model.config.vocab_size
        if tokenizer is not None:
            tokenizer.add_tokens(strings)
            ids = tokenizer.convert_tokens_to_ids(strings)
            if ids[2:] != list(range(ids[2], ids[2] + num_speech_tokens)):
                raise ValueError("the tokenizer already holds some of <a_0>..<a_K-1> at non-contiguous ids")
            start, end, offset, vocab = ids[0], ids[1], ids[2], max(vocab, len(tokenizer))
        else:
            start, end, offset, vocab = vocab, vocab + 1, vocab + 2, vocab + num_speech_tokens + 2
        text_model.resize_token_embeddings(vocab, pad_to_multiple_of=pad_to_multiple_of)
        # a new composite config resets its sub-configs' attention / experts kernels unless told the loaded ones
        kernels = {f"{kind}_implementation":
                   {"text_config": getattr(text_model.config, f"_{kind}_implementation", None)}
                   for kind in ("attn", "experts")}
        codec_settings = {} if codec is None else {**DualSpeechLMConfig.codec_kwargs(codec), "codec_config": None}
        config = DualSpeechLMConfig(text_config=text_model.config, num_speech_tokens=num_speech_tokens,
                                    audio_start_token_id=start, audio_end_token_id=end, speech_token_offset=offset,
                                    **kernels, **{**config_kwargs, **codec_settings})
        model = cls(config, language_model=text_model).to(text_model.device)
        if codec is not None:  # the given codec with its weights, not one built from its config
            model.set_codec(codec)
        model.generation_config = copy.deepcopy(text_model.generation_config)
        return model

    def get_input_embeddings(self):
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self):
        return self.language_model.get_output_embeddings()

    def set_output_embeddings(self, value):
        self.language_model.set_output_embeddings(value)

    def get_decoder(self):
        return self.language_model.get_decoder()

    def prepare_inputs_for_generation(self, *args, **kwargs):
        return self.language_model.prepare_inputs_for_generation(*args, **kwargs)

    def check_text_inputs(self, input_ids, attention_mask, total_length: int | None = None) -> None:
        if input_ids.ndim != 2 or 0 in input_ids.shape:
            raise ValueError(f"input_ids must be a non-empty [batch, length] tensor, "
                             f"got shape {list(input_ids.shape)}")
        limit = getattr(self.config.text_config, "max_position_embeddings", None)
        length = total_length or (attention_mask.shape[-1] if attention_mask is not None else input_ids.shape[-1])
        if limit is not None and length > limit:
            raise ValueError(f"the sequence of {length} tokens is longer than the backbone's "
                             f"max_position_embeddings={limit}; shorten the prompt or the audio")
        if attention_mask is not None and (attention_mask.ndim != 2 or attention_mask.shape[0] != input_ids.shape[0]):
            raise ValueError(f"attention_mask must be [batch, length] like input_ids {list(input_ids.shape)}, "
                             f"got {list(attention_mask.shape)}")

    def task_flags(self, tasks: Sequence[str] | None, batch: int, has_codes: bool):
        """-> (is_generation `[batch]` bool, uses_coc `[batch]` bool); tasks None means all understanding."""
        if tasks is None:
            if has_codes:
                raise ValueError("acoustic_codes were given without tasks: pass tasks=[...] naming each item's task")
            tasks = [self.config.understanding_tasks[0]] * batch
        if isinstance(tasks, str) or len(tasks) != batch:
            raise ValueError(f"tasks must be a list of {batch} task names, one per item, got {tasks!r}")
        tasks = [task.lower() for task in tasks]
        known = self.config.understanding_tasks + self.config.generation_tasks
        if unknown := sorted(set(tasks) - set(known)):
            raise ValueError(f"unknown task(s) {unknown}; known tasks: {list(known)}")
        return (torch.tensor([task in self.config.generation_tasks for task in tasks]),
                torch.tensor([task in self.config.coc_tasks for task in tasks]))

    def draw_coc_modes(self, uses_coc: torch.Tensor, coc_modes=None) -> torch.LongTensor:
        """The CoC mode of each item `[batch]`: drawn (training mode) or given for CoC items, "both" for the rest."""
        if coc_modes is not None:
            modes = torch.as_tensor([(COC_MODES.index(m) if m in COC_MODES else -1) if isinstance(m, str) else int(m)
                                     for m in coc_modes])
            if modes.shape != uses_coc.shape or not ((modes >= 0) & (modes < len(COC_MODES))).all():
                raise ValueError(f"coc_modes must name one of {COC_MODES} per item, got {coc_modes!r}")
        elif self.training:
            allowed = torch.tensor([COC_MODES.index(mode) for mode in self.config.coc_modes])
            modes = allowed[torch.randint(len(allowed), uses_coc.shape)]
        else:
            modes = torch.full(uses_coc.shape, BOTH)
        return torch.where(uses_coc, modes, BOTH)

    def acoustic_targets(self, is_generation, acoustic_codes, acoustic_lengths, labels):
        """-> codes `[batch, n_q, T]` and lengths `[batch]`: the given codes for generation items, one no-speech frame
        for understanding items."""
        config, batch = self.config, labels.shape[0]
        generation = is_generation.to(labels.device)
        if acoustic_codes is None:
            if generation.any():
                raise ValueError("generation tasks need acoustic_codes [batch, num_codebooks, frames] "
                                 "and acoustic_lengths")
            acoustic_codes = labels.new_zeros(batch, config.num_codebooks, 1)
            acoustic_lengths = labels.new_ones(batch)
        if acoustic_lengths is None:
            acoustic_lengths = torch.full((batch,), acoustic_codes.shape[-1], device=labels.device)
        frames = acoustic_codes.shape[-1]
        if acoustic_codes.ndim != 3 or acoustic_codes.shape[:2] != (batch, config.num_codebooks) or frames == 0:
            raise ValueError(f"acoustic_codes must have shape [batch={batch}, num_codebooks={config.num_codebooks}, "
                             f"frames>0], got {list(acoustic_codes.shape)}")
        check_shape("acoustic_lengths", acoustic_lengths, batch)
        lengths = torch.where(generation, acoustic_lengths.to(labels.device), 1)
        if ((lengths < 1) | (lengths > acoustic_codes.shape[-1])).any():
            raise ValueError(f"acoustic_lengths {acoustic_lengths.tolist()} must lie in "
                             f"[1, {acoustic_codes.shape[-1]}] for generation items")
        valid = generation[:, None, None] & (torch.arange(frames, device=labels.device) < lengths[:, None, None])
        if (((acoustic_codes < 0) | (acoustic_codes >= config.codebook_size)) & valid).any():
            raise ValueError(f"acoustic codes must lie in [0, {config.codebook_size}) within acoustic_lengths")
        no_speech = torch.full_like(acoustic_codes, config.acoustic_config.no_speech_id)
        codes = torch.where(generation[:, None, None], acoustic_codes.clamp(0, config.codebook_size - 1), no_speech)
        return codes, lengths

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache=None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        tasks: Sequence[str] | None = None,
        condition_mask: torch.Tensor | None = None,
        acoustic_codes: torch.LongTensor | None = None,
        acoustic_lengths: torch.LongTensor | None = None,
        speaker_embeddings: torch.FloatTensor | None = None,
        coc_modes: Sequence[str | int] | torch.Tensor | None = None,
        **kwargs,
    ) -> DualSpeechLMOutput:
        r"""
        input_ids, attention_mask, labels `[batch, L]` (labels -100 outside answer + EOS), position_ids, cache,
        inputs_embeds, use_cache, logits_to_keep: as the backbone's (position ids follow attention_mask when not
        given).
        With `labels` the AcousticGPT loss is computed too, from:
            tasks (`list[str]`): each item's task (config.understanding_tasks / generation_tasks; None: understanding).
            condition_mask `[batch, L]`: the prompt positions conditioning AcousticGPT (default: attended positions
                without a label).
            acoustic_codes `[batch, num_codebooks, frames]` + acoustic_lengths `[batch]`: targets of generation items
                (unread, and not needed, with acoustic_loss_weight 0).
            speaker_embeddings `[batch, speaker_embedding_size]` (default and for understanding items: zeros).
            coc_modes (`list[str]` from COC_MODES, or indices): fixes the CoC draw of the CoC items.
        """
        if input_ids is not None:
            self.check_text_inputs(input_ids, attention_mask)
            for name, tensor in (("labels", labels), ("condition_mask", condition_mask)):
                check_shape(name, tensor, *input_ids.shape)
        batch = (input_ids if input_ids is not None else inputs_embeds).shape[0]
        check_shape("speaker_embeddings", speaker_embeddings, batch, self.config.speaker_embedding_size)
        # the items' kinds, known from their tasks (None with labels: all understanding); understanding items hear no
        # voice
        flags = (self.task_flags(tasks, batch, labels is not None and acoustic_codes is not None)
                 if labels is not None or tasks is not None else None)
        if flags is not None and speaker_embeddings is not None:
            speaker_embeddings = speaker_embeddings * flags[0].to(speaker_embeddings)[:, None]
        if position_ids is None and attention_mask is not None:
            length = (input_ids if input_ids is not None else inputs_embeds).shape[1]
            position_ids = positions_from_mask(attention_mask, length)
        trains_acoustic = labels is not None and self.config.acoustic_loss_weight > 0
        if trains_acoustic:  # the acoustic prefix needs the final hidden states: capture only those
            kwargs["output_hidden_states"] = kwargs.get("output_hidden_states") or -1
        llm_labels = labels
        if labels is not None and not self.config.semantic_supervision:  # no LLM cross-entropy on target USTokens
            llm_labels = labels.masked_fill(self.config.is_speech_token(labels), -100)
        out = self.language_model(input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                  position_ids=position_ids, cache=cache, labels=llm_labels, use_cache=use_cache,
                                  logits_to_keep=logits_to_keep, **kwargs)
        output = DualSpeechLMOutput(logits=out.logits, cache=out.get("cache"), hidden_states=out.get("hidden_states"),
                                    attentions=out.get("attentions"))
        if labels is None:
            return output

        is_generation, uses_coc = flags
        target = self.config.is_speech_token(labels)
        if (is_generation.to(labels.device) & ~target.any(-1)).any():
            raise ValueError("every generation item needs its target USTokens <a_k> in labels")
        output.llm_loss = out.loss
        loss = self.config.llm_loss_weight * out.loss
        if not trains_acoustic:  # AcousticGPT learns nothing: its pass and its targets are spared (see render_speech)
            output.loss = loss
            return output
        codes, lengths = self.acoustic_targets(is_generation, acoustic_codes, acoustic_lengths, labels)
        modes = self.draw_coc_modes(uses_coc, coc_modes).to(labels.device)
        attended = attention_mask.bool() if attention_mask is not None else torch.ones_like(labels, dtype=torch.bool)
        prompt = attended & (condition_mask.bool() if condition_mask is not None else labels == -100)
        # the prompt and/or the target USTokens, as the item's CoC mode says
        condition = (prompt & (modes != TARGET)[:, None]) | (target & (modes != PROMPT)[:, None])
        if speaker_embeddings is None:
            speaker_embeddings = out.hidden_states[-1].new_zeros(batch, self.config.speaker_embedding_size)
        acoustic = self.acoustic_gpt(speaker_embeddings, out.hidden_states[-1], condition, codes, lengths)
        output.acoustic_loss = acoustic.loss
        output.loss = loss + self.config.acoustic_loss_weight * acoustic.loss
        output.acoustic_logits, output.acoustic_condition_mask, output.coc_modes = acoustic.logits, condition, modes
        return output

    def generate(self, *args, output_audio: bool = False, **kwargs):
        """Text, as any causal LM's `generate`; with `output_audio=True`, speech: `generate_speech(*args,
        output_audio=True, **kwargs)`, a `DualSpeechLMSpeechOutput` whose `waveforms` `[batch, samples]` and
        `waveform_lengths` `[batch]` hold the audio (`audio_arrays()` cuts it per item)."""
        if output_audio:
            return self.generate_speech(*args, output_audio=True, **kwargs)
        return super().generate(*args, **kwargs)

    @torch.no_grad()
    def generate_speech(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        condition_mask: torch.Tensor | None = None,
        speaker_embeddings: torch.FloatTensor | None = None,
        generation_config: GenerationConfig | None = None,
        acoustic_generation_config: GenerationConfig | None = None,
        output_audio: bool = False,
        use_cache: bool = True,
        **kwargs,
    ) -> DualSpeechLMSpeechOutput:
        r"""Speech for a batch of left-padded prompts `input_ids` / `attention_mask` `[batch, L]` (everything before
        the answer; `<audio>` is appended unless every prompt already ends with it).

        condition_mask `[batch, L]`: prompt positions conditioning AcousticGPT (default: the whole prompt), joined by
        the written USTokens ("both", as in training). speaker_embeddings `[batch, speaker_embedding_size]`: pass the
        target voice's (the default, zeros, is what understanding items train with, next to no-speech).
        generation_config: USToken sampling (default `config.speech_generation`, its `max_new_tokens` shortened to fit
        the backbone's `max_position_embeddings`); acoustic_generation_config: code sampling (default
        `config.acoustic_generation`); kwargs `acoustic_<name>` update the latter, the others the former (e.g.
        `do_sample=False, max_new_tokens=200, acoustic_max_new_tokens=500`). use_cache: KV caches in both models.
        output_audio: decode waveforms too, through `codec_model`.
        """
        config = self.config
        attention_mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        self.check_text_inputs(input_ids, attention_mask)
        check_shape("condition_mask", condition_mask, *input_ids.shape)
        check_shape("speaker_embeddings", speaker_embeddings, input_ids.shape[0], config.speaker_embedding_size)
        if not attention_mask[:, -1].all():
            raise ValueError("prompts must be left-padded for batched generation (tokenizer.padding_side = 'left')")
        prompt = attention_mask.bool() & (condition_mask.bool() if condition_mask is not None else True)
        ends_with_audio = input_ids[:, -1] == config.audio_start_token_id
        if ends_with_audio.all():
            # <audio> belongs to the answer, as in training
            prompt = torch.cat([prompt[:, :-1], torch.zeros_like(prompt[:, :1])], dim=1)
        elif ends_with_audio.any():
            raise ValueError("either every prompt ends with <audio> or none does")
        else:  # the answer starts with <audio>: write it for the LLM, outside the prompt condition
            input_ids = torch.cat([input_ids, torch.full_like(input_ids[:, :1], config.audio_start_token_id)], dim=1)
            attention_mask = torch.cat([attention_mask, torch.ones_like(attention_mask[:, :1])], dim=1)
            prompt = torch.cat([prompt, torch.zeros_like(prompt[:, :1])], dim=1)

        acoustic_kwargs = {key[len("acoustic_"):]: kwargs.pop(key) for key in list(kwargs)
                           if key.startswith("acoustic_")}
        generation_config = copy.deepcopy(generation_config or GenerationConfig(**config.speech_generation))
        pad_id = config.text_config.pad_token_id
        if unused := generation_config.update(**{"eos_token_id": config.audio_end_token_id, "use_cache": use_cache,
                                                 "pad_token_id": (config.audio_end_token_id if pad_id is None
                                                                  else pad_id),
                                                 **kwargs}):
            raise ValueError(f"unknown generation arguments {sorted(unused)}")
        limit = getattr(config.text_config, "max_position_embeddings", None)
        if generation_config.max_new_tokens and limit and "max_new_tokens" not in kwargs:  # fit the backbone
            generation_config.max_new_tokens = max(1, min(generation_config.max_new_tokens,
                                                          limit - input_ids.shape[1]))
        self.check_text_inputs(input_ids, attention_mask, input_ids.shape[1] + (generation_config.max_new_tokens or 0))
        sequences = self.generate(input_ids, attention_mask=attention_mask, generation_config=generation_config,
                                  logits_processor=LogitsProcessorList([SpeechTokensOnly(config)]))
        copies = sequences.shape[0] // input_ids.shape[0]  # num_return_sequences
        attention_mask, prompt = attention_mask.repeat_interleave(copies, 0), prompt.repeat_interleave(copies, 0)

        written = sequences[:, input_ids.shape[1]:]
        ended = written == config.audio_end_token_id
        valid = (ended.long().cumsum(-1) - ended.long()) == 0  # up to and including the first </audio>
        full_mask = torch.cat([attention_mask, valid.long()], dim=1)
        condition = torch.cat([prompt, valid & config.is_speech_token(written)], dim=1)
        if speaker_embeddings is not None:
            speaker_embeddings = speaker_embeddings.repeat_interleave(copies, 0)
        return self.render_speech(sequences, full_mask, condition, speaker_embeddings, acoustic_generation_config,
                                  output_audio, use_cache, **acoustic_kwargs)

    @torch.no_grad()
    def render_speech(
        self,
        sequences: torch.LongTensor,
        attention_mask: torch.Tensor,
        condition_mask: torch.Tensor,
        speaker_embeddings: torch.FloatTensor | None = None,
        acoustic_generation_config: GenerationConfig | None = None,
        output_audio: bool = False,
        use_cache: bool = True,
        **acoustic_kwargs,
    ) -> DualSpeechLMSpeechOutput:
        r"""The acoustic half of `generate_speech`: AcousticGPT codes (and waveforms, with `output_audio`) for
        sequences whose USTokens are already written, e.g. by `generate_speech`'s first half or from reference audio.

        sequences, attention_mask `[batch, L]`: prompt, `<audio>`, USTokens, `</audio>` (left-padded); condition_mask
        `[batch, L]`: the positions conditioning AcousticGPT (the prompt's condition and the USTokens written after
        the last `<audio>`, as in training); speaker_embeddings
        `[batch, speaker_embedding_size]` (default zeros); acoustic_generation_config (default
        `config.acoustic_generation`) and `acoustic_kwargs` (its fields, e.g. `do_sample=False`). A `codec_model` that
        `decodes_ustokens_alone` renders the USTokens and the voice without AcousticGPT (no codes are returned).
        """
        config, codec = self.config, self.codec_model
        if output_audio and codec is None:
            raise ValueError("this model holds no codec (config.codec_config is None), so it writes no audio: give it "
                             "one with from_text_model(..., codec=) or set_codec")
        voice = speaker_embeddings  # the codec hears the voice only when one was asked for
        check_shape("speaker_embeddings", voice, sequences.shape[0], config.speaker_embedding_size)
        answer = (sequences == config.audio_start_token_id).flip(1).cumsum(1).flip(1) == 0  # after the last <audio>
        written = condition_mask.bool() & attention_mask.bool() & answer & config.is_speech_token(sequences)
        ustokens, ustoken_lengths = packed_left(sequences - config.speech_token_offset, written)
        output = DualSpeechLMSpeechOutput(sequences=sequences, ustokens=ustokens, ustoken_lengths=ustoken_lengths,
                                          speaker_embeddings=voice)
        if codec is not None and codec.decodes_ustokens_alone:  # AcousticGPT's codes would go unread
            if output_audio:
                output.waveforms, output.waveform_lengths = self.decode_ustokens(codec, ustokens, ustoken_lengths,
                                                                                 voice)
            return output
        if config.acoustic_loss_weight == 0:
            raise ValueError("this model's AcousticGPT was trained with acoustic_loss_weight 0, i.e. not at all: "
                             "give it a codec that decodes the USTokens alone (set_codec; "
                             "codec.decodes_ustokens_alone)")
        hidden = self.language_model(sequences, attention_mask=attention_mask, use_cache=False,
                                     output_hidden_states=-1,
                                     position_ids=positions_from_mask(attention_mask, attention_mask.shape[1]),
                                     logits_to_keep=1).hidden_states[-1]
        if speaker_embeddings is None:
            speaker_embeddings = hidden.new_zeros(sequences.shape[0], config.speaker_embedding_size)
        acoustic_generation_config = acoustic_generation_config or GenerationConfig(**config.acoustic_generation)
        acoustic = self.acoustic_gpt.generate(speaker_embeddings, hidden, condition_mask.bool(),
                                              acoustic_generation_config, use_cache=use_cache, **acoustic_kwargs)
        output.codes, output.code_lengths = acoustic.codes, acoustic.lengths
        if output_audio:
            output.waveforms, output.waveform_lengths = self.decode_codes(acoustic.codes, acoustic.lengths, ustokens,
                                                                          ustoken_lengths, voice)
        return output

    @staticmethod
    def decode_ustokens(codec, ustokens: torch.LongTensor, ustoken_lengths: torch.LongTensor,
                        speaker_embeddings: torch.FloatTensor | None = None):
        """Speech from the written USTokens `[batch, U]` (+ `ustoken_lengths`) and the voice alone, through `codec`
        (the model's or another), one that `decodes_ustokens_alone` (the semantic-only path, no AcousticGPT) ->
        (waveforms `[batch, samples]`, sample lengths); items without tokens get no samples."""
        if not codec.decodes_ustokens_alone:
            raise ValueError(f"{type(codec).__name__} does not decode USTokens alone: it needs AcousticGPT's codes")
        # the codec need not share the model's codes: it reads one placeholder code frame per item, and ignores it
        placeholder = ustokens.new_zeros(ustokens.shape[0], codec.num_codebooks, 1)
        return _decoded_speech(codec, placeholder, (ustoken_lengths > 0).long(), ustokens, ustoken_lengths,
                               speaker_embeddings)

    def decode_codes(self, codes: torch.LongTensor, lengths: torch.LongTensor,
                     ustokens: torch.LongTensor | None = None, ustoken_lengths: torch.LongTensor | None = None,
                     speaker_embeddings: torch.FloatTensor | None = None):
        """AcousticGPT's codes `[batch, n_q, T]` + lengths -> (waveforms `[batch, samples]`, sample lengths) through
        `codec_model`; no-speech items (length 0) get no samples. A codec that reads USTokens (`ustoken_vocab_size`)
        gets `ustokens` `[batch, U]` + `ustoken_lengths` too, and one that reads the voice (`speaker_embedding_size`)
        the `speaker_embeddings` `[batch, speaker_embedding_size]`, when given."""
        if self.codec_model is None:
            raise ValueError("this model holds no codec (config.codec_config is None): set one with set_codec")
        return _decoded_speech(self.codec_model, codes, lengths, ustokens, ustoken_lengths, speaker_embeddings)


def _decoded_speech(codec, codes: torch.LongTensor, lengths: torch.LongTensor,
                    ustokens: torch.LongTensor | None = None, ustoken_lengths: torch.LongTensor | None = None,
                    speaker_embeddings: torch.FloatTensor | None = None):
    """`codec.decode` for `decode_codes` and `decode_ustokens`: no-speech items (length 0) get no samples."""
    if codes.shape[-1] == 0:
        return torch.zeros(codes.shape[0], 0), torch.zeros(codes.shape[0], dtype=torch.long)
    decoded = codec.decode(codes, lengths.clamp(min=1),
                           **codec_decoder_inputs(codec, ustokens, ustoken_lengths, speaker_embeddings))
    has_speech = lengths.to(decoded.lengths.device) > 0
    return decoded.waveforms * has_speech[:, None], decoded.lengths * has_speech


register_auto_classes(DualSpeechLMConfig, DualSpeechLMForConditionalGeneration, AutoModel)

__all__ = ["audio_arrays", "codec_decoder_inputs", "DualSpeechLMForConditionalGeneration", "DualSpeechLMOutput",
           "DualSpeechLMSpeechOutput", "SpeechTokensOnly"]
