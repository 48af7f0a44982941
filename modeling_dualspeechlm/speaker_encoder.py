"""A small d-vector speaker encoder: 16 kHz waveform -> 512-d L2-normalised speaker embedding.

DualSpeechLM conditions its AcousticGPT on a 512-d embedding from a speaker-verification encoder
and scores TTS / VC by speaker similarity (SIM, the cosine of two such embeddings). No pretrained
speaker model is reachable offline, so this one is trained from scratch
(`dualspeechlm.training.train_speaker_encoder`).

    waveform [batch, samples] + lengths
      -> log-mel filterbank (torchaudio, computed inside the model; the clip's level removed)
      -> TDNN: dilated time-delay layers (1-D convolutions; the first halves the frame rate) with
         ReLU, LayerNorm and residuals
      -> attentive statistics pooling over the valid frames only (weighted mean and std)
      -> Linear -> 512-d embedding, L2-normalised

Every operation is frame-local or masked, so padding never changes an embedding: a batch of
padded clips gives the same embeddings as the clips one by one.

This file imports only torch, torchaudio and transformers, so a saved model folder (which carries
a copy of it) loads anywhere with `AutoModel.from_pretrained(folder, trust_remote_code=True)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchaudio
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput

from .registration import register_auto_classes

try:  # transformers 5: init functions that leave weights loaded from a checkpoint alone
    from transformers import initialization as _init
except ImportError:  # pragma: no cover - older transformers
    _init = nn.init


class SpeakerEncoderConfig(PretrainedConfig):
    r"""Configuration of [`SpeakerEncoderModel`].

    Args:
        sampling_rate (`int`, defaults to 16000): the only sampling rate the model accepts.
        n_fft (`int`, defaults to 512): FFT size of the STFT (32 ms); also the shortest input.
        win_length (`int`, defaults to 400): Hann window length in samples (25 ms).
        hop_length (`int`, defaults to 160): frame shift in samples (10 ms, 100 frames/s).
        num_mel_bins (`int`, defaults to 64): mel filterbank channels.
        f_min, f_max (`float`, defaults to 20 and 8000): mel filterbank range in Hz.
        log_offset (`float`, defaults to 1e-6): added to the mel power before the log.
        feature_normalization (`str`, defaults to `"gain"`): what is removed from each clip's
            log-mel before the network: `"gain"` its mean over all frames and bins (the recording
            level; the long-term spectral shape, much of a voice's timbre, stays), `"cmn"` the
            mean of every bin over the frames (cepstral mean normalisation: also removes that
            shape, robust to microphones), or `"none"`.
        hidden_size (`int`, defaults to 128): channels of the frame-level convolutions.
        conv_kernel_sizes, conv_dilations, conv_strides (`tuple[int]`): one entry per convolution
            layer; the default first layer halves the frame rate (100 -> 50 frames/s), which halves
            the cost of everything after it.
        stats_size (`int`, defaults to 256): channels of the last (1x1) frame-level layer, the
            features the pooling takes mean and standard deviation of.
        attention_size (`int`, defaults to 128): hidden size of the pooling's attention scorer.
        embedding_size (`int`, defaults to 512): size of the speaker embedding (512 as in the paper).
        layer_norm_eps (`float`, defaults to 1e-5): epsilon of the channel LayerNorms.
        std_floor (`float`, defaults to 1e-5): variance floor of the statistics pooling.
    """

    model_type = "dualspeechlm_speaker_encoder"

    sampling_rate: int = 16_000
    n_fft: int = 512
    win_length: int = 400
    hop_length: int = 160
    num_mel_bins: int = 64
    f_min: float = 20.0
    f_max: float = 8_000.0
    log_offset: float = 1e-6
    feature_normalization: str = "gain"
    hidden_size: int = 128
    conv_kernel_sizes: list[int] | tuple[int, ...] = (5, 3, 3, 3)
    conv_dilations: list[int] | tuple[int, ...] = (1, 2, 3, 4)
    conv_strides: list[int] | tuple[int, ...] = (2, 1, 1, 1)
    stats_size: int = 256
    attention_size: int = 128
    embedding_size: int = 512
    layer_norm_eps: float = 1e-5
    std_floor: float = 1e-5

    def __post_init__(self, **kwargs):
        self.conv_kernel_sizes = [int(k) for k in self.conv_kernel_sizes]
        self.conv_dilations = [int(d) for d in self.conv_dilations]
        self.conv_strides = [int(s) for s in self.conv_strides]
        if not self.conv_kernel_sizes or not (
            len(self.conv_kernel_sizes) == len(self.conv_dilations) == len(self.conv_strides)
        ):
            raise ValueError("conv_kernel_sizes, conv_dilations and conv_strides need the same (non-zero) number "
                             "of entries")
        if any(s < 1 for s in self.conv_strides):
            raise ValueError(f"conv_strides must be positive, got {self.conv_strides}")
        if any(k < 1 or k % 2 == 0 for k in self.conv_kernel_sizes):
            raise ValueError(f"conv_kernel_sizes must be odd and positive, got {self.conv_kernel_sizes}")
        if any(d < 1 for d in self.conv_dilations):
            raise ValueError(f"conv_dilations must be positive, got {self.conv_dilations}")
        if self.feature_normalization not in ("gain", "cmn", "none"):
            raise ValueError(f"feature_normalization must be 'gain', 'cmn' or 'none', "
                             f"got {self.feature_normalization!r}")
        if not 0 < self.win_length <= self.n_fft:
            raise ValueError(f"win_length ({self.win_length}) must be in 1..n_fft ({self.n_fft})")
        if not 0 <= self.f_min < self.f_max <= self.sampling_rate / 2:
            raise ValueError(f"need 0 <= f_min < f_max <= sampling_rate / 2, got {self.f_min}, {self.f_max}")
        for name in ("sampling_rate", "hop_length", "num_mel_bins", "hidden_size", "stats_size",
                     "attention_size", "embedding_size"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        super().__post_init__(**kwargs)

    @property
    def min_samples(self) -> int:
        """The shortest input: one STFT frame."""
        return self.n_fft


@dataclass
class SpeakerEncoderOutput(ModelOutput):
    """`embeddings` [batch, embedding_size], unit L2 norm; `unnormalized_embeddings` before the
    normalisation; `frame_lengths` [batch], the valid frames each clip gave the pooling."""

    embeddings: torch.FloatTensor | None = None
    unnormalized_embeddings: torch.FloatTensor | None = None
    frame_lengths: torch.LongTensor | None = None


class _TdnnLayer(nn.Module):
    """A time-delay layer on [batch, frames, channels]: the `kernel_size` frames `dilation` apart
    around each output frame (every `stride`-th frame) are stacked and mapped by one Linear, i.e.
    a dilated Conv1d with "same" zero padding, then ReLU and LayerNorm; residual when shapes match.

    Written as one matrix product over stacked frames rather than `nn.Conv1d` because that runs
    about twice as fast on CPU for these small layers, and keeps the channels last for LayerNorm.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int, stride: int, eps: float):
        super().__init__()
        self.linear = nn.Linear(in_channels * kernel_size, out_channels)
        self.norm = nn.LayerNorm(out_channels, eps=eps)
        self.kernel_size, self.dilation, self.stride = kernel_size, dilation, stride
        self.residual = in_channels == out_channels and stride == 1

    def output_lengths(self, lengths):
        return (lengths + self.stride - 1) // self.stride

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # `hidden` is zero past each clip's end: the same zeros a clip alone gets from the padding
        # below, so valid output frames do not depend on the batch's padding. `mask` [batch,
        # frames_out, 1] is the output's valid-frame mask.
        frames_out = self.output_lengths(hidden.shape[1])
        if self.kernel_size == 1:
            stacked = hidden[:, :: self.stride]
        else:
            pad = self.dilation * (self.kernel_size - 1) // 2
            padded = F.pad(hidden, (0, 0, pad, pad))
            span = self.stride * (frames_out - 1) + 1
            stacked = torch.cat([padded[:, j * self.dilation : j * self.dilation + span : self.stride]
                                 for j in range(self.kernel_size)], dim=-1)
        output = self.norm(F.relu(self.linear(stacked)))
        if self.residual:
            output = output + hidden
        return output * mask


class _AttentiveStatisticsPooling(nn.Module):
    """Attention-weighted mean and standard deviation over the valid frames of each clip."""

    def __init__(self, channels: int, attention_size: int, std_floor: float):
        super().__init__()
        self.attention = nn.Sequential(nn.Linear(channels, attention_size), nn.Tanh(), nn.Linear(attention_size, 1))
        self.std_floor = std_floor

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # hidden [batch, frames, channels], mask [batch, frames, 1]
        scores = self.attention(hidden).masked_fill(~mask.bool(), torch.finfo(hidden.dtype).min)
        weights = torch.softmax(scores, dim=1) * mask  # exactly zero on padding
        mean = (weights * hidden).sum(1)
        variance = (weights * hidden.square()).sum(1) - mean.square()
        std = variance.clamp(min=self.std_floor).sqrt()
        return torch.cat([mean, std], dim=-1)


class SpeakerEncoderPreTrainedModel(PreTrainedModel):
    config_class = SpeakerEncoderConfig
    base_model_prefix = "speaker_encoder"
    main_input_name = "input_values"
    supports_gradient_checkpointing = False

    @torch.no_grad()
    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            _init.kaiming_uniform_(module.weight, a=5 ** 0.5)  # torch's own default for these layers
            if module.bias is not None:
                _init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            _init.ones_(module.weight)
            _init.zeros_(module.bias)


class SpeakerEncoderModel(SpeakerEncoderPreTrainedModel):
    """Waveform [batch, samples] (+ lengths) -> L2-normalised speaker embeddings [batch, 512]."""

    def __init__(self, config: SpeakerEncoderConfig):
        super().__init__(config)
        layers, channels = [], config.num_mel_bins
        for kernel_size, dilation, stride in zip(config.conv_kernel_sizes, config.conv_dilations, config.conv_strides):
            layers.append(_TdnnLayer(channels, config.hidden_size, kernel_size, dilation, stride,
                                     config.layer_norm_eps))
            channels = config.hidden_size
        layers.append(_TdnnLayer(channels, config.stats_size, 1, 1, 1, config.layer_norm_eps))
        self.layers = nn.ModuleList(layers)
        self.pooling = _AttentiveStatisticsPooling(config.stats_size, config.attention_size, config.std_floor)
        self.projection = nn.Linear(2 * config.stats_size, config.embedding_size)
        # The Hann window and mel filterbank are derived from the config, not weights: cached per
        # device and dtype instead of being saved as buffers.
        self._frontend_cache: dict = {}
        self.post_init()

    # --- input checks ------------------------------------------------------------------------

    def _check_inputs(self, input_values, lengths, attention_mask, sampling_rate):
        config = self.config
        if sampling_rate is not None and int(sampling_rate) != config.sampling_rate:
            raise ValueError(
                f"the speaker encoder expects {config.sampling_rate} Hz audio but got {sampling_rate} Hz; "
                f"resample first, e.g. torchaudio.functional.resample(wave, {sampling_rate}, {config.sampling_rate})"
            )
        if not isinstance(input_values, torch.Tensor):
            input_values = torch.as_tensor(input_values)
        if not input_values.is_floating_point():
            raise ValueError(
                f"input_values must be a float waveform in [-1, 1], got dtype {input_values.dtype} "
                "(convert integer PCM with `pcm / 32768`)"
            )
        if input_values.dim() == 1:
            input_values = input_values.unsqueeze(0)
        elif input_values.dim() == 3:
            if input_values.shape[1] != 1:
                raise ValueError(
                    f"expected mono audio, got {input_values.shape[1]} channels (shape "
                    f"{tuple(input_values.shape)}); average the channels first, e.g. wave.mean(dim=1)"
                )
            input_values = input_values[:, 0]
        elif input_values.dim() != 2:
            raise ValueError(
                f"input_values must be [samples], [batch, samples] or [batch, 1, samples], got shape "
                f"{tuple(input_values.shape)}"
            )
        batch, samples = input_values.shape
        if batch == 0 or samples == 0:
            raise ValueError(f"input_values is empty (shape {tuple(input_values.shape)})")
        if not torch.isfinite(input_values).all():
            raise ValueError("input_values contains NaN or infinite samples")
        if lengths is not None and attention_mask is not None:
            raise ValueError("pass either lengths or attention_mask, not both")
        if attention_mask is not None:
            if tuple(attention_mask.shape) != (batch, samples):
                raise ValueError(f"attention_mask must have shape {(batch, samples)}, "
                                 f"got {tuple(attention_mask.shape)}")
            lengths = attention_mask.long().sum(-1)
        if lengths is None:
            lengths = torch.full((batch,), samples, dtype=torch.long)
        lengths = torch.as_tensor(lengths, device=input_values.device)
        if lengths.is_floating_point() or lengths.shape != (batch,):
            raise ValueError(f"lengths must be {batch} integer sample counts, got {lengths!r}")
        lengths = lengths.long()
        if (lengths == 0).any():
            raise ValueError("an input clip is empty (length 0)")
        if (lengths > samples).any():
            raise ValueError(f"lengths exceed the {samples} samples of input_values: {lengths.tolist()}")
        if (lengths < config.min_samples).any():
            shortest = int(lengths.min())
            raise ValueError(
                f"a clip of {shortest} samples is too short: the speaker encoder needs at least "
                f"{config.min_samples} samples ({1000 * config.min_samples / config.sampling_rate:.0f} ms)"
            )
        return input_values, lengths

    # --- front end ---------------------------------------------------------------------------

    def _frontend(self, device, dtype):
        key = (str(device), dtype)
        if key not in self._frontend_cache:
            config = self.config
            window = torch.hann_window(config.win_length, dtype=torch.float32)
            filterbank = torchaudio.functional.melscale_fbanks(
                n_freqs=config.n_fft // 2 + 1, f_min=float(config.f_min), f_max=float(config.f_max),
                n_mels=config.num_mel_bins, sample_rate=config.sampling_rate, norm="slaney", mel_scale="slaney",
            )
            self._frontend_cache[key] = (window.to(device=device, dtype=dtype),
                                         filterbank.to(device=device, dtype=dtype))
        return self._frontend_cache[key]

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Frames whose whole STFT window lies inside each clip (no centring, no edge padding)."""
        return 1 + torch.div(lengths - self.config.n_fft, self.config.hop_length, rounding_mode="floor")

    def compute_log_mel(self, input_values: torch.Tensor, lengths: torch.Tensor | None = None,
                        sampling_rate: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-mel filterbank [batch, frames, num_mel_bins] and valid frames per clip [batch].

        Frames past a clip's end are set to zero. The clip's level is not yet removed
        (`embed_log_mel` does that over the frames it is given, so random crops work in training).
        """
        input_values, lengths = self._check_inputs(input_values, lengths, None, sampling_rate)
        return self._log_mel(input_values, lengths)

    def _log_mel(self, input_values: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        config = self.config
        compute_dtype = torch.float32 if input_values.dtype in (torch.float16, torch.bfloat16) else input_values.dtype
        window, filterbank = self._frontend(input_values.device, compute_dtype)
        spectrum = torch.stft(input_values.to(compute_dtype), n_fft=config.n_fft, hop_length=config.hop_length,
                              win_length=config.win_length, window=window, center=False, return_complex=True)
        power = spectrum.real.square() + spectrum.imag.square()  # [batch, freqs, frames]
        log_mel = torch.log(torch.matmul(power.transpose(1, 2), filterbank) + config.log_offset)
        frame_lengths = self.frame_lengths(lengths)
        mask = torch.arange(log_mel.shape[1], device=log_mel.device)[None, :] < frame_lengths[:, None]
        return log_mel * mask[..., None], frame_lengths

    # --- network -----------------------------------------------------------------------------

    def embed_log_mel(self, log_mel: torch.Tensor, frame_lengths: torch.Tensor | None = None) -> SpeakerEncoderOutput:
        """Embeddings of log-mel features [batch, frames, num_mel_bins] with valid `frame_lengths`."""
        if log_mel.dim() != 3 or log_mel.shape[-1] != self.config.num_mel_bins:
            raise ValueError(f"log_mel must be [batch, frames, {self.config.num_mel_bins}], "
                             f"got {tuple(log_mel.shape)}")
        batch, frames, _ = log_mel.shape
        if frame_lengths is None:
            frame_lengths = torch.full((batch,), frames, dtype=torch.long, device=log_mel.device)
        frame_lengths = frame_lengths.to(log_mel.device)
        if (frame_lengths < 1).any() or (frame_lengths > frames).any():
            raise ValueError(f"frame_lengths must be in 1..{frames}, got {frame_lengths.tolist()}")
        dtype = self.projection.weight.dtype

        def valid(lengths, size):  # [batch, size, 1] mask of the first `lengths` frames
            return (torch.arange(size, device=log_mel.device)[None, :] < lengths[:, None]).to(dtype)[..., None]

        mask = valid(frame_lengths, frames)
        hidden = log_mel.to(dtype) * mask
        valid_frames = frame_lengths[:, None, None].to(dtype)
        if self.config.feature_normalization == "gain":  # one number per clip: the level
            hidden = (hidden - hidden.sum((1, 2), keepdim=True) / (valid_frames * hidden.shape[-1])) * mask
        elif self.config.feature_normalization == "cmn":  # one number per clip and mel bin
            hidden = (hidden - hidden.sum(1, keepdim=True) / valid_frames) * mask
        lengths = frame_lengths
        for layer in self.layers:
            lengths = layer.output_lengths(lengths)
            mask = valid(lengths, layer.output_lengths(hidden.shape[1]))
            hidden = layer(hidden, mask)
        unnormalized = self.projection(self.pooling(hidden, mask))
        return SpeakerEncoderOutput(embeddings=F.normalize(unnormalized, dim=-1),
                                    unnormalized_embeddings=unnormalized, frame_lengths=lengths)

    def forward(self, input_values: torch.Tensor, lengths: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, sampling_rate: int | None = None,
                return_dict: bool | None = None, **kwargs) -> SpeakerEncoderOutput | tuple:
        """Speaker embeddings of mono 16 kHz float waveforms.

        Args:
            input_values: [batch, samples] (also [samples] or [batch, 1, samples]), zero-padded.
            lengths: [batch] valid samples per clip (default: all `samples`); or
            attention_mask: [batch, samples], 1 on valid samples (the Hugging Face convention).
            sampling_rate: if given, must equal `config.sampling_rate` (a guard against 24 kHz
                codec audio or 44.1 kHz files reaching the model unresampled).
        """
        input_values, lengths = self._check_inputs(input_values, lengths, attention_mask, sampling_rate)
        log_mel, frame_lengths = self._log_mel(input_values, lengths)
        output = self.embed_log_mel(log_mel, frame_lengths)
        if return_dict is False:
            return output.to_tuple()
        return output

    @torch.no_grad()
    def embed(self, waveforms, sampling_rate: int | None = None, batch_size: int = 32) -> torch.Tensor:
        """Embeddings [n, embedding_size] of a list of mono waveforms (numpy arrays or tensors of
        any lengths; a single waveform gives [1, embedding_size]). Clips are batched by length."""
        if not isinstance(waveforms, (list, tuple)):
            waveforms = [waveforms]
        if len(waveforms) == 0:
            raise ValueError("no waveforms to embed")
        clips = []
        for index, wave in enumerate(waveforms):
            wave = torch.as_tensor(wave)
            if wave.dim() == 2 and 1 in wave.shape:
                wave = wave.reshape(-1)
            if wave.dim() != 1:
                raise ValueError(
                    f"waveform {index} has shape {tuple(wave.shape)}: expected mono [samples] audio; "
                    "average stereo channels first"
                )
            clips.append(wave)
        device = self.projection.weight.device
        order = sorted(range(len(clips)), key=lambda i: clips[i].numel())
        embeddings = [None] * len(clips)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            lengths = torch.tensor([clips[i].numel() for i in chunk])
            batch = torch.zeros(len(chunk), int(lengths.max()) if len(chunk) else 0)
            for row, i in enumerate(chunk):
                if not clips[i].is_floating_point():
                    raise ValueError(f"waveform {i} must be float audio in [-1, 1], got {clips[i].dtype}")
                batch[row, : clips[i].numel()] = clips[i].float()
            output = self(batch.to(device), lengths=lengths.to(device), sampling_rate=sampling_rate)
            for row, i in enumerate(chunk):
                embeddings[i] = output.embeddings[row]
        return torch.stack(embeddings)


def speaker_similarity(a, b) -> torch.Tensor:
    """Cosine similarity of speaker embeddings along the last dimension (broadcasting), the SIM
    metric: [d] x [d] -> scalar tensor, [n, d] x [n, d] -> [n], [n, d] x [d] -> [n]."""
    a = torch.as_tensor(a)
    b = torch.as_tensor(b).to(a.device)
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"embedding sizes differ: {a.shape[-1]} vs {b.shape[-1]}")
    dtype = torch.promote_types(a.dtype, b.dtype) if a.is_floating_point() or b.is_floating_point() else torch.float32
    return F.cosine_similarity(a.to(dtype), b.to(dtype), dim=-1)


register_auto_classes(SpeakerEncoderConfig, SpeakerEncoderModel)

__all__ = ["SpeakerEncoderConfig", "SpeakerEncoderModel", "SpeakerEncoderOutput", "speaker_similarity"]
