"""AcousticGPT: the prefix LM that writes acoustic codec codes after DualSpeechLM's LLM (arXiv 2508.08961).

    prefix  [batch, 1 + C, d]  = [speaker_projection(speaker_embeddings [batch, 512]),
                                  adapter(condition_states [batch, C, llm_hidden])]   (adapter: Linear-ReLU-Linear)
    steps   [batch, S, d]      = sum over codebooks of the code embeddings (delay pattern below)
    GPT-2 blocks (pre-LayerNorm, learned positions): the prefix attends bidirectionally to itself, every step
    causally to the prefix and the steps before it -> logits [batch, S, num_codebooks, vocab_size]

Vocabulary of each codebook: `codebook_size` codes, then pad, no-speech, BOS, EOS. Each codebook has its own
embedding table, which is also its output head (tied: the logits are the hidden states times the table).

Several codebooks: the delay pattern (MusicGen). Codebook q writes frame t at step t + q, so one step writes
all codebooks at once, each seeing the earlier (coarser) codebooks of its own frame in the steps before:

    step        0    1    2    3    4
    codebook 0  c0   c1   c2   EOS  pad        (2 frames: T + num_codebooks steps)
    codebook 1  BOS  c0   c1   c2   EOS

It is the simplest scheme that is right for both the paper's single codebook (no delay: [BOS, codes, EOS]
exactly) and residual codecs: a flattened sequence would multiply the length by `num_codebooks`, a depth decoder
(CSM) is a second model, and parallel heads without delay lose the coarse-to-fine dependency. Codebook 0 decides
the length by writing EOS; everything else at the edges (BOS before a codebook starts, its EOS, pad after) is
forced at generation and left out of the loss. Understanding items (no speech) train on one frame of no-speech.

Padding: prefix positions marked False in `condition_mask` are invisible and take no position index, so a
padded batch computes what its items compute one by one. Incremental decoding keeps one (key, value) pair per
layer (`past`), so each new step costs one position instead of the whole sequence.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import GenerationConfig, PreTrainedModel
from transformers.generation.logits_process import (
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)
from transformers.utils import ModelOutput

from .configuration_dualspeechlm import AcousticGPTConfig


@dataclass
class AcousticGPTOutput(ModelOutput):
    """loss: mean CE over the target tokens; logits: `[batch, steps, num_codebooks, vocab_size]`."""

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None


@dataclass
class AcousticGPTGenerateOutput(ModelOutput):
    """codes: `[batch, num_codebooks, frames]` (0 past each length); lengths: frames per item `[batch]` (0: no
    speech)."""

    codes: torch.LongTensor | None = None
    lengths: torch.LongTensor | None = None


def delay_pattern(codes: torch.Tensor, lengths: torch.Tensor, config: AcousticGPTConfig):
    """codes `[batch, n_q, frames]` + lengths `[batch]` -> (inputs, targets, loss_mask), each `[batch, n_q, steps]`
    with steps = max(lengths) + n_q: targets hold codebook q's frame t at step t + q, then EOS; inputs are the
    targets shifted right behind a BOS step."""
    batch, n_q, frames = codes.shape
    steps = int(lengths.max()) + n_q
    frame = torch.arange(steps, device=codes.device) - torch.arange(n_q, device=codes.device)[:, None]
    frame = frame.expand(batch, -1, -1)  # [batch, n_q, steps]: the frame codebook q holds at each step
    length = lengths[:, None, None]
    code = codes.gather(2, frame.clamp(0, frames - 1))
    targets = torch.where(frame < 0, config.bos_id, torch.where(
        frame < length, code, torch.where(frame == length, config.eos_id, config.pad_id)))
    inputs = torch.cat([torch.full_like(targets[..., :1], config.bos_id), targets[..., :-1]], dim=-1)
    return inputs, targets, (frame >= 0) & (frame <= length)


def undo_delay(steps: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The written steps `[batch, n_q, >= max(lengths) + n_q - 1]` -> codes `[batch, n_q, max(lengths)]`, 0 past
    lengths."""
    batch, n_q, _ = steps.shape
    frames = int(lengths.max()) if lengths.numel() else 0
    index = torch.arange(frames, device=steps.device) + torch.arange(n_q, device=steps.device)[:, None]
    codes = steps.gather(2, index.expand(batch, -1, -1))
    return codes * (torch.arange(frames, device=steps.device) < lengths[:, None, None])


def sampling_warpers(generation_config: GenerationConfig) -> LogitsProcessorList:
    """Temperature / top-k / top-p from a GenerationConfig (unset or neutral values are skipped)."""
    warpers = LogitsProcessorList()
    if not generation_config.do_sample:
        return warpers
    if generation_config.temperature not in (None, 1.0):
        warpers.append(TemperatureLogitsWarper(generation_config.temperature))
    if generation_config.top_k:
        warpers.append(TopKLogitsWarper(generation_config.top_k))
    if generation_config.top_p not in (None, 1.0):
        warpers.append(TopPLogitsWarper(generation_config.top_p))
    return warpers


class SelfAttention(nn.Module):
    def __init__(self, config: AcousticGPTConfig):
        super().__init__()
        self.num_heads, self.dropout = config.num_attention_heads, config.dropout
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, past: tuple | None = None):
        """x `[batch, new, d]`, mask `[batch, 1, new, past + new]` bool -> (`[batch, new, d]`, (keys, values))."""
        batch, new, width = x.shape
        q, k, v = self.qkv(x).view(batch, new, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(out.transpose(1, 2).reshape(batch, new, width)), (k, v)


class AcousticGPTBlock(nn.Module):
    def __init__(self, config: AcousticGPTConfig):
        super().__init__()
        width = config.hidden_size
        self.ln_1 = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.attn = SelfAttention(config)
        self.ln_2 = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.mlp = nn.Sequential(nn.Linear(width, config.intermediate_size), nn.GELU(approximate="tanh"),
                                 nn.Linear(config.intermediate_size, width))
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, past: tuple | None = None):
        attended, present = self.attn(self.ln_1(x), mask, past)
        x = x + self.dropout(attended)
        return x + self.dropout(self.mlp(self.ln_2(x))), present


class AcousticGPT(PreTrainedModel):
    """Prefix LM over delayed codec codes; `forward` trains (teacher forcing), `generate` writes codes."""

    config_class = AcousticGPTConfig
    base_model_prefix = "acoustic_gpt"
    main_input_name = "codes"
    _no_split_modules = ["AcousticGPTBlock"]
    # attention is always torch SDPA; accepting every setting lets a composite config name the backbone's kernel
    _supports_sdpa = _supports_flash_attn = _supports_flex_attn = True

    def __init__(self, config: AcousticGPTConfig):
        super().__init__(config)
        width = config.hidden_size
        self.speaker_projection = nn.Linear(config.speaker_embedding_size, width)
        self.adapter = nn.Sequential(nn.Linear(config.condition_size, width), nn.ReLU(), nn.Linear(width, width))
        self.embed_codes = nn.Embedding(config.num_codebooks * config.vocab_size, width)  # codebook tables, stacked
        self.embed_positions = nn.Embedding(config.max_position_embeddings, width)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(AcousticGPTBlock(config) for _ in range(config.num_hidden_layers))
        self.norm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.post_init()

    def embed_prefix(self, speaker_embeddings: torch.Tensor, condition_states: torch.Tensor,
                     condition_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """speaker_embeddings `[batch, speaker_size]`, condition_states `[batch, C, condition_size]`, condition_mask
        `[batch, C]` -> (prefix `[batch, 1 + C, d]`, its mask `[batch, 1 + C]` bool; the speaker vector is always
        on)."""
        speaker = self.speaker_projection(speaker_embeddings.to(self.dtype))[:, None]
        prefix = torch.cat([speaker, self.adapter(condition_states.to(self.dtype))], dim=1)
        return prefix, torch.cat([condition_mask.new_ones(condition_mask.shape[0], 1), condition_mask], dim=1).bool()

    def embed_steps(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens `[batch, n_q, steps]` -> `[batch, steps, d]`, the sum of each codebook's embedding."""
        offsets = torch.arange(tokens.shape[1], device=tokens.device)[:, None] * self.config.vocab_size
        return self.embed_codes(tokens + offsets).sum(dim=1)

    def code_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden `[batch, steps, d]` -> `[batch, steps, n_q, vocab_size]` through the tied embedding tables."""
        return F.linear(hidden, self.embed_codes.weight).unflatten(-1, (self.config.num_codebooks,
                                                                        self.config.vocab_size))

    def transformer(self, embeds: torch.Tensor, key_mask: torch.Tensor, prefix_length: int, past: list | None = None):
        """embeds `[batch, new, d]` (the last `new` of the `keys` positions), key_mask `[batch, keys]` bool (False:
        padding, invisible and without a position index) -> (hidden `[batch, new, d]`, cache: one (k, v) per layer).
        Positions before `prefix_length` form the bidirectional prefix."""
        new, keys = embeds.shape[1], key_mask.shape[1]
        positions = key_mask.long().cumsum(-1) - 1
        if int((positions * key_mask).max()) >= self.config.max_position_embeddings:
            raise ValueError(f"AcousticGPT input of {int(key_mask.sum(-1).max())} positions (prefix + code steps) is "
                             f"longer than max_position_embeddings={self.config.max_position_embeddings}")
        query = torch.arange(keys - new, keys, device=key_mask.device)[:, None]
        key = torch.arange(keys, device=key_mask.device)
        visible = ((key < prefix_length) | (key <= query)) & key_mask[:, None]
        mask = (visible | (key == query))[:, None]  # a padded query sees itself: no fully masked softmax row
        positions = positions[:, keys - new:].clamp(0, self.config.max_position_embeddings - 1)  # padding: any index
        x = self.dropout(embeds + self.embed_positions(positions))
        cache = []
        for index, block in enumerate(self.blocks):
            x, present = block(x, mask, None if past is None else past[index])
            cache.append(present)
        return self.norm(x), cache

    def forward(self, speaker_embeddings: torch.Tensor, condition_states: torch.Tensor, condition_mask: torch.Tensor,
                codes: torch.Tensor, code_lengths: torch.Tensor) -> AcousticGPTOutput:
        """Teacher forcing. codes `[batch, num_codebooks, frames]` (ids < codebook_size, or no-speech), code_lengths
        `[batch]` >= 1; the prefix arguments as `embed_prefix`."""
        prefix, prefix_mask = self.embed_prefix(speaker_embeddings, condition_states, condition_mask)
        inputs, targets, loss_mask = delay_pattern(codes, code_lengths, self.config)
        steps = inputs.shape[-1]
        step_mask = torch.arange(steps, device=codes.device) < (code_lengths[:, None] + self.config.num_codebooks)
        steps_in = self.embed_steps(inputs)
        hidden, _ = self.transformer(torch.cat([prefix, steps_in], dim=1),
                                     torch.cat([prefix_mask, step_mask], dim=1), prefix.shape[1])
        logits = self.code_logits(hidden[:, prefix.shape[1]:])
        loss_mask = loss_mask.transpose(1, 2)
        loss = F.cross_entropy(logits[loss_mask].float(), targets.transpose(1, 2)[loss_mask])
        return AcousticGPTOutput(loss=loss, logits=logits)

    def next_tokens(self, logits: torch.Tensor, step: int, lengths: torch.Tensor, max_frames: int,
                    warpers: LogitsProcessorList, do_sample: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """One delay-pattern step: logits `[batch, n_q, vocab]` -> (tokens `[batch, n_q]`, updated lengths).
        Codebook 0 samples a code or EOS (or no-speech at step 0), the others a code; edges are forced."""
        config, (batch, n_q, vocab) = self.config, logits.shape
        allowed = torch.zeros(n_q, vocab, dtype=torch.bool, device=logits.device)
        allowed[:, : config.codebook_size] = True
        allowed[0, config.eos_id] = True
        allowed[0, config.no_speech_id] = step == 0
        scores = warpers(None, logits.float().masked_fill(~allowed, float("-inf")).flatten(0, 1))
        tokens = (torch.multinomial(scores.softmax(-1), 1)[:, 0] if do_sample else scores.argmax(-1)).view(batch, n_q)
        first = tokens[:, 0]
        ended = (lengths < 0) & ((first == config.eos_id) | (first == config.no_speech_id) | (step == max_frames))
        lengths = torch.where(ended, step, lengths)
        frame, length = step - torch.arange(n_q, device=logits.device), lengths[:, None]
        known = length >= 0
        forced = torch.where(frame < 0, config.bos_id, torch.where(
            known & (frame == length), config.eos_id, torch.where(known & (frame > length), config.pad_id, -1)))
        return torch.where(forced >= 0, forced, tokens), lengths

    @torch.no_grad()
    def generate(self, speaker_embeddings: torch.Tensor, condition_states: torch.Tensor, condition_mask: torch.Tensor,
                 generation_config: GenerationConfig | None = None, use_cache: bool = True,
                 **kwargs) -> AcousticGPTGenerateOutput:
        """Write codes for a batch of prefixes (arguments as `embed_prefix`).
        `generation_config` (or kwargs: `do_sample`, `temperature`, `top_k`, `top_p`, `max_new_tokens` = most frames;
        default greedy up to the position limit) sets the sampling. Items stop when codebook 0 writes EOS; the batch
        runs until every item has.
        `use_cache=False` recomputes the whole sequence at each step (same result, for tests and benchmarks)."""
        generation_config = copy.deepcopy(generation_config or GenerationConfig())
        if unused := generation_config.update(**kwargs):
            raise ValueError(f"unknown generation arguments {sorted(unused)}")
        config, n_q = self.config, self.config.num_codebooks
        prefix, prefix_mask = self.embed_prefix(speaker_embeddings, condition_states, condition_mask)
        batch, prefix_length = prefix_mask.shape
        room = config.max_position_embeddings - int(prefix_mask.sum(-1).max()) - n_q
        if room < 1:
            raise ValueError(f"AcousticGPT prefix of {int(prefix_mask.sum(-1).max())} positions leaves no room for "
                             f"codes (max_position_embeddings={config.max_position_embeddings})")
        max_frames = min(generation_config.max_new_tokens or room, room)
        warpers = sampling_warpers(generation_config)
        written = torch.full((batch, n_q, 1), config.bos_id, dtype=torch.long, device=prefix.device)
        lengths = torch.full((batch,), -1, dtype=torch.long, device=prefix.device)
        key_mask, past = prefix_mask, None
        for step in range(max_frames + n_q):
            key_mask = torch.cat([key_mask, key_mask.new_ones(batch, 1)], dim=1)
            if use_cache and past is not None:
                embeds = self.embed_steps(written[..., -1:])
                hidden, past = self.transformer(embeds, key_mask, prefix_length, past)
            else:
                embeds = torch.cat([prefix, self.embed_steps(written)], dim=1)
                hidden, past = self.transformer(embeds, key_mask, prefix_length)
            tokens, lengths = self.next_tokens(self.code_logits(hidden[:, -1:])[:, 0], step, lengths, max_frames,
                                               warpers, generation_config.do_sample)
            written = torch.cat([written, tokens[..., None]], dim=-1)
            if (lengths >= 0).all() and step >= int(lengths.max()) + n_q - 1:
                break
        return AcousticGPTGenerateOutput(codes=undo_delay(written[..., 1:], lengths), lengths=lengths)


__all__ = ["AcousticGPT", "AcousticGPTGenerateOutput", "AcousticGPTOutput", "delay_pattern", "undo_delay"]
