"""The USTokenizer's understanding-driven objective: its tokens, through an adapter, into a text LLM.

    prompt text before the speech span  ->  LLM input embeddings  ┐
    cached encoder output -> USTokenizer -> adapter embeddings     ├─ one sequence -> LLM -> answer CE
    prompt text after the span, answer  ->  LLM input embeddings  ┘

loss = USTokenizer loss (commitment + reconstruction, weighted by its config)
       + understanding_weight * cross-entropy on the answer tokens
       + transcript_ctc_weight * character CTC of the spoken words from the quantized latents (off in the paper).
The LLM is frozen (the paper's setting), so the gradient shapes only the tokenizer and its adapter.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from torch.nn.utils.rnn import pad_sequence
from transformers import PreTrainedModel
from transformers.utils import ModelOutput, logging

from dualspeechlm.modeling_ustokenizer import USTokenizerModel
from dualspeechlm.tasks import answer_text

from .encoder_cache import cached_encoder_outputs

logger = logging.get_logger(__name__)

IGNORE_INDEX = -100
TRANSCRIPT_HEAD = "transcript_head.safetensors"  # the transcript CTC head + its alphabet, beside the tokenizer


@dataclass
class UnderstandingOutput(ModelOutput):
    """Every term beside the total; `codes` `[batch, tokens]` (ids_pad_value past each length)."""

    loss: torch.FloatTensor | None = None
    commitment_loss: torch.FloatTensor | None = None
    reconstruction_loss: torch.FloatTensor | None = None
    understanding_loss: torch.FloatTensor | None = None
    transcript_ctc_loss: torch.FloatTensor | None = None
    codes: torch.LongTensor | None = None


def pad_ids(sequences: list, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Lists / arrays of ids -> `[batch, longest]` long tensor padded with `pad_id` + lengths `[batch]`."""
    tensors = [torch.tensor(np.asarray(s), dtype=torch.long) for s in sequences]
    return pad_sequence(tensors, batch_first=True, padding_value=pad_id), torch.tensor([len(t) for t in tensors])


def character_ids(text: str, alphabet: str) -> list[int]:
    """The CTC targets of `text`: 1 + each character's index in `alphabet` (0 is the blank); others are skipped."""
    index = {c: i + 1 for i, c in enumerate(alphabet)}
    return [index[c] for c in text if c in index]


def greedy_ctc_texts(log_probs: torch.Tensor, lengths: torch.Tensor, alphabet) -> list[str]:
    """Greedy CTC decoding: `[batch, slots, len(alphabet) + 1]` scores (0 the blank) + valid slots `[batch]` ->
    one text per item (repeats merged, blanks dropped, stripped; "" when nothing is spelled)."""
    texts = []
    for labels, length in zip(log_probs.argmax(-1), lengths.tolist()):
        kept = torch.unique_consecutive(labels[:length]).tolist()
        texts.append("".join(alphabet[k - 1] for k in kept if k).strip())
    return texts


class UnderstandingCollator:
    """Rows with `encoder_hidden_states` (`[num_frames * d_model]`, see encoder_cache), `num_frames`, `before_ids`,
    `after_ids` and (training) `answer_ids` and `transcript_ids` (`character_ids` of the spoken words) -> the padded
    tensors + lengths `USTokenizerForUnderstanding.forward` takes."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        states = [torch.tensor(np.asarray(row["encoder_hidden_states"]),
                               dtype=torch.float32).view(row["num_frames"], -1)
                  for row in rows]
        batch = {"encoder_hidden_states": pad_sequence(states, batch_first=True),
                 "encoder_lengths": torch.tensor([len(s) for s in states])}
        for part in ("before", "after", "answer", "transcript"):
            if f"{part}_ids" in rows[0]:
                batch[f"{part}_ids"], batch[f"{part}_lengths"] = pad_ids([r[f"{part}_ids"] for r in rows],
                                                                         self.pad_token_id)
        return batch


class USTokenizerForUnderstanding(nn.Module):
    """A `USTokenizerModel` feeding a causal LM (frozen unless `freeze_llm=False`); with the tokenizer's
    `transcript_ctc_weight` on, also a small conv CTC head over `alphabet` (the characters of the spoken words)."""

    def __init__(self, ustokenizer: USTokenizerModel, llm: PreTrainedModel, freeze_llm: bool = True,
                 alphabet: str | None = None):
        super().__init__()
        config = ustokenizer.config
        if config.llm_hidden_size != llm.config.hidden_size:
            raise ValueError(f"the tokenizer's llm_hidden_size ({config.llm_hidden_size}) must equal "
                             f"the LLM's hidden_size ({llm.config.hidden_size})")
        self.ustokenizer, self.llm, self.freeze_llm = ustokenizer, llm, freeze_llm
        if freeze_llm:
            llm.requires_grad_(False)
        if config.transcript_ctc_weight > 0:
            if not alphabet:
                raise ValueError("transcript_ctc_weight > 0 needs the alphabet of the transcripts")
            self.alphabet = alphabet
            # a conv over +-2 tokens: English spelling of a sound depends on its neighbours, which one token's
            # code cannot know; the codes need to tell the sounds apart, the head spells them in context
            self.transcript_head = nn.Sequential(
                nn.Conv1d(config.codebook_dim, config.codebook_dim, 5, padding=2), nn.GELU(),
                nn.Conv1d(config.codebook_dim, 2 * (len(alphabet) + 1), 1))

    def save_transcript_head(self, folder: str | Path) -> None:
        """Write the transcript CTC head and its alphabet to `folder/transcript_head.safetensors` (the tokenizer's
        folder): with them `from_pretrained` can score the tokens' spelling again without retraining."""
        save_file(self.transcript_head.state_dict(), Path(folder) / TRANSCRIPT_HEAD,
                  metadata={"alphabet": self.alphabet})

    @classmethod
    def from_pretrained(cls, folder: str | Path, llm: PreTrainedModel,
                        freeze_llm: bool = True) -> USTokenizerForUnderstanding:
        """The tokenizer saved in `folder` feeding `llm`, with its transcript head when one was saved there. A
        tokenizer trained with the transcript CTC but saved without the head (stage 1 before it kept it) loads with
        the CTC off: its answers are scored, its spelling is not."""
        ustokenizer = USTokenizerModel.from_pretrained(folder)
        head_file = Path(folder) / TRANSCRIPT_HEAD
        if ustokenizer.config.transcript_ctc_weight == 0:
            return cls(ustokenizer, llm, freeze_llm)
        if not head_file.is_file():
            logger.warning(f"{folder} holds no {TRANSCRIPT_HEAD}: its tokens' spelling is not scored")
            ustokenizer.config.transcript_ctc_weight = 0.0
            return cls(ustokenizer, llm, freeze_llm)
        with safe_open(head_file, framework="pt") as saved:
            model = cls(ustokenizer, llm, freeze_llm, alphabet=saved.metadata()["alphabet"])
            model.transcript_head.load_state_dict({name: saved.get_tensor(name) for name in saved.keys()})
        return model

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_llm:
            self.llm.eval()  # no dropout in a frozen model
        return self

    def sequences(self, speech: torch.Tensor, speech_lengths: torch.Tensor, before_ids, before_lengths,
                  after_ids, after_lengths, answer_ids=None, answer_lengths=None, left_padding: bool = False):
        """Per item [embed(before), speech[:length], embed(after), embed(answer)] -> padded
        `inputs_embeds` `[batch, longest, hidden]`, `attention_mask` `[batch, longest]` and `labels`
        (`IGNORE_INDEX` everywhere but the answer; None without answers)."""
        embed = self.llm.get_input_embeddings()
        rows, labels = [], []
        for i in range(speech.shape[0]):
            parts = [embed(before_ids[i, : before_lengths[i]]), speech[i, : speech_lengths[i]],
                     embed(after_ids[i, : after_lengths[i]])]
            label = torch.full((sum(len(p) for p in parts),), IGNORE_INDEX, dtype=torch.long, device=speech.device)
            if answer_ids is not None:
                parts.append(embed(answer_ids[i, : answer_lengths[i]]))
                label = torch.cat([label, answer_ids[i, : answer_lengths[i]]])
            rows.append(torch.cat(parts))
            labels.append(label)
        if left_padding:  # generation appends on the right, so every prompt must end at the last column
            rows, labels = [r.flip(0) for r in rows], [lab.flip(0) for lab in labels]
        embeds = pad_sequence(rows, batch_first=True)
        mask = pad_sequence([torch.ones(len(r), dtype=torch.long, device=speech.device) for r in rows],
                            batch_first=True)
        label_tensor = pad_sequence(labels, batch_first=True, padding_value=IGNORE_INDEX)
        if left_padding:
            embeds, mask, label_tensor = embeds.flip(1), mask.flip(1), label_tensor.flip(1)
        return embeds, mask, (label_tensor if answer_ids is not None else None)

    def transcript_log_probs(self, quantized: torch.Tensor, token_lengths: torch.Tensor) -> torch.Tensor:
        """Quantized latents `[batch, tokens, codebook_dim]` -> the transcript head's character log-probabilities
        `[batch, 2 * tokens, len(alphabet) + 1]` (two CTC slots per token: a 25 Hz token may hold two characters)."""
        batch, tokens, _ = quantized.shape
        valid = torch.arange(tokens, device=quantized.device) < token_lengths[:, None]
        logits = self.transcript_head((quantized * valid[..., None]).transpose(1, 2)).transpose(1, 2)
        return logits.float().reshape(batch, 2 * tokens, -1).log_softmax(-1)

    def transcript_ctc(self, quantized: torch.Tensor, token_lengths: torch.Tensor, transcript_ids: torch.Tensor,
                       transcript_lengths: torch.Tensor) -> torch.Tensor:
        """Character CTC (mean per target character) of quantized latents `[batch, tokens, codebook_dim]` against
        `[batch, longest]` ids."""
        log_probs = self.transcript_log_probs(quantized, token_lengths)
        return nn.functional.ctc_loss(log_probs.transpose(0, 1), transcript_ids, 2 * token_lengths, transcript_lengths,
                                      zero_infinity=True)

    @torch.no_grad()
    def spell(self, encoder_hidden_states, encoder_lengths, **_) -> list[str]:
        """Greedy CTC transcripts of the transcript head reading the *quantized* tokens: what the tokens keep of
        the words, without the LLM."""
        latents, lengths, mask = self.ustokenizer.latents(encoder_hidden_states, encoder_lengths)
        quantized, _ = self.ustokenizer.quantize(latents, mask, update_codebook=False)
        return greedy_ctc_texts(self.transcript_log_probs(quantized, lengths), 2 * lengths, self.alphabet)

    def forward(self, encoder_hidden_states, encoder_lengths, before_ids, before_lengths, after_ids, after_lengths,
                answer_ids, answer_lengths, transcript_ids=None, transcript_lengths=None) -> UnderstandingOutput:
        """Cached encoder output `[batch, frames_50hz, d_model]` + lengths, prompt parts, answers and (with the
        transcript CTC on) transcripts (`[batch, longest]` ids + lengths) -> the weighted loss and each of its
        terms."""
        out = self.ustokenizer(encoder_hidden_states=encoder_hidden_states, encoder_lengths=encoder_lengths)
        config = self.ustokenizer.config
        loss, ctc = out.loss, None
        if config.transcript_ctc_weight > 0:
            if transcript_ids is None:
                raise ValueError("transcript_ctc_weight > 0: the batch needs transcript_ids (character_ids)")
            ctc = self.transcript_ctc(out.quantized_latents, out.token_lengths, transcript_ids, transcript_lengths)
            loss = loss + config.transcript_ctc_weight * ctc
        weight = config.understanding_weight
        if weight > 0:
            embeds, mask, labels = self.sequences(out.adapter_embeddings, out.token_lengths, before_ids,
                                                  before_lengths, after_ids, after_lengths, answer_ids, answer_lengths)
            understanding = self.llm(inputs_embeds=embeds, attention_mask=mask, labels=labels).loss
        else:  # the LLM's loss would train nothing: skip its forward pass
            understanding = out.loss.new_zeros(())
        return UnderstandingOutput(
            loss=loss + weight * understanding,
            commitment_loss=out.commitment_loss, reconstruction_loss=out.reconstruction_loss,
            understanding_loss=understanding, transcript_ctc_loss=ctc, codes=out.codes,
        )

    @torch.no_grad()
    def answer(self, encoder_hidden_states, encoder_lengths, before_ids, before_lengths, after_ids, after_lengths,
               max_new_tokens: int = 48, **_) -> torch.Tensor:
        """Greedy answers `[batch, new_tokens]` from the *quantized* tokens (as at inference), padded
        with the LLM's pad id after EOS."""
        tokenizer = self.ustokenizer
        latents, lengths, mask = tokenizer.latents(encoder_hidden_states, encoder_lengths)
        quantized, _ = tokenizer.quantize(latents, mask, update_codebook=False)
        embeds, attention, _ = self.sequences(tokenizer.adapt(quantized, mask), lengths, before_ids, before_lengths,
                                              after_ids, after_lengths, left_padding=True)
        config = self.llm.config
        return self.llm.generate(inputs_embeds=embeds, attention_mask=attention, max_new_tokens=max_new_tokens,
                                 do_sample=False, num_beams=1, eos_token_id=config.eos_token_id,
                                 pad_token_id=config.pad_token_id)


def understanding_dataset(corpus: str, cache_dir: str, split: str, examples: list[dict], text_tokenizer, encoder,
                          feature_extractor, alphabet: str | None = None) -> datasets.Dataset:
    """Cached encoder outputs of every understanding example of `split` + its tokenized prompt parts (and, given
    an `alphabet`, the `character_ids` of its transcript for the transcript CTC); encoder outputs cached in
    `cache_dir`."""
    parts = []
    for config in ("speech", "style", "qa"):
        rows = [ex for ex in examples if ex["config"] == config]
        cache = cached_encoder_outputs(corpus, config, split, encoder, feature_extractor, cache_dir)
        cache = cache.select([ex["index"] for ex in rows]).select_columns(["encoder_hidden_states", "num_frames"])

        def ids(texts):
            return text_tokenizer(texts, add_special_tokens=False).input_ids

        eos = text_tokenizer.eos_token
        columns = {
            "task": [ex["task"] for ex in rows],
            "before_ids": [[text_tokenizer.bos_token_id] + i for i in ids([ex["before"] for ex in rows])],
            "after_ids": ids([ex["after"] for ex in rows]),
            "answer_ids": ids([answer_text(ex["answer"]) + eos for ex in rows]),
            "answer": [ex["answer"] for ex in rows],
        }
        if alphabet:
            columns["transcript_ids"] = [character_ids(ex["transcript"], alphabet) for ex in rows]
        for name, values in columns.items():
            cache = cache.add_column(name, values)
        parts.append(cache)
    return datasets.concatenate_datasets(parts).with_format("numpy")


__all__ = ["USTokenizerForUnderstanding", "UnderstandingCollator", "UnderstandingOutput",
           "greedy_ctc_texts", "pad_ids", "understanding_dataset"]
