"""Speech synthesis for the corpus: one `Voice` type and one `synthesize` over three offline engines.

* flite (Debian `flite`): the CMU ARCTIC voices `slt`, `rms` and `awb` (statistical parametric voices built
  from real recordings) and the diphone voice `kal16`; fast (one process per clip, about 50 ms).
* festival (Debian `festival` + a voice package, e.g. `festvox-us-slt-hts`): HTS and diphone voices, many
  clips per process (its start-up costs about a second).
* espeak-ng (Debian `espeak-ng`): formant synthesis in many languages; the corpus' Spanish and French.

A `Voice` is an engine's voice at a speaking rate and pitch, both relative to the voice's own; that
combination is one "speaker" of the corpus. Every engine's output is resampled to 16 kHz mono float32, the
rate Whisper and the USTokenizer read.
"""

from __future__ import annotations

import io
import shutil
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
import soundfile
import torch
import torchaudio
from tqdm.auto import tqdm

SAMPLING_RATE = 16_000
# Debian package of each engine's program, for the error that asks to install it.
ENGINE_PACKAGES = {"espeak-ng": "espeak-ng", "flite": "flite", "festival": "festival"}


class EngineNotFoundError(RuntimeError):
    """A speech engine the corpus needs is not installed (the message names the Debian package)."""



@dataclass(frozen=True)
class Voice:
    """One speaker of the corpus.

    `speaker` is the engine's own voice: for espeak-ng `"{language}+{variant}"` (`"en-us+m1"`), for flite a
    voice of `flite -lv` (`"slt"`), for festival a voice of `(voice.list)` (`"cmu_us_slt_arctic_hts"`).
    `rate` and `pitch` scale the voice's own speaking rate and mean F0 (1.2 = 20% faster / higher);
    `whisper` removes the voicing (the style task's whispered speech).
    """

    name: str
    engine: str
    speaker: str
    rate: float = 1.0
    pitch: float = 1.0
    whisper: bool = False

    @property
    def language(self) -> str:
        """The language the voice speaks: espeak-ng's language voice, else English (flite's and festival's)."""
        return self.speaker.split("+")[0] if self.engine == "espeak-ng" else "en"

    def with_style(self, **changes) -> "Voice":
        """The same voice with some settings changed (e.g. `rate=1.6` for fast speech)."""
        return replace(self, **changes)


def _engine(name: str):
    from . import espeak, festival, flite

    engines = {"espeak-ng": espeak, "flite": flite, "festival": festival}
    if name not in engines:
        raise ValueError(f"unknown speech engine {name!r}; choose one of {sorted(engines)}")
    return engines[name]


def engine_binary(engine: str) -> str:
    """The path of `engine`'s program; EngineNotFoundError naming the Debian package when it is missing."""
    path = shutil.which(engine)
    if path is None:
        raise EngineNotFoundError(
            f"{engine} is required to synthesize the corpus but was not found on PATH; install it with "
            f"`apt-get install {ENGINE_PACKAGES[engine]}` (`make setup` does this)."
        )
    return path


def check_voice(voice: Voice) -> None:
    """Raise ValueError unless the voice's engine has its speaker and can apply its rate and pitch
    (EngineNotFoundError when the engine itself is missing)."""
    engine = _engine(voice.engine)
    engine_binary(voice.engine)
    if not (0.25 <= voice.rate <= 4 and 0.1 <= voice.pitch <= 3):
        raise ValueError(f"voice {voice.name!r}: rate must be in 0.25..4 and pitch in 0.1..3 "
                         "(relative to the voice's own)")
    engine.check(voice)


def engine_version(engine: str) -> str:
    """The installed version of `engine` (for the corpus manifest)."""
    return _engine(engine).version()


def synthesize(text: str, voice: Voice) -> np.ndarray:
    """Speak `text` with `voice`; returns float32 mono audio at 16 kHz, shape [samples]."""
    return synthesize_many([(text, voice)], workers=1, progress=False)[0]


def synthesize_many(jobs: list[tuple[str, Voice]], workers: int = 2, progress: bool = True,
                    chunk: int = 64) -> list[np.ndarray]:
    """The 16 kHz float32 audio of each `(text, voice)` job, in order.

    Jobs are grouped by voice into chunks of at most `chunk` texts, which `workers` threads hand to the engines
    (each synthesizes in subprocesses, so threads keep every core busy; festival speaks a whole chunk in one
    process).
    """
    if any(not text or not text.strip() for text, _ in jobs):
        raise ValueError("cannot synthesize empty text")
    for voice in dict.fromkeys(voice for _, voice in jobs):
        check_voice(voice)
    by_voice: dict[Voice, list[int]] = defaultdict(list)
    for index, (_, voice) in enumerate(jobs):
        by_voice[voice].append(index)
    chunks = [(voice, indices[start:start + chunk]) for voice, indices in by_voice.items()
              for start in range(0, len(indices), chunk)]
    results: list[np.ndarray | None] = [None] * len(jobs)

    def run(item):
        voice, indices = item
        clips = _engine(voice.engine).synthesize([jobs[i][0] for i in indices], voice)
        return indices, [_finish(audio, rate, voice) for audio, rate in clips]

    with ThreadPoolExecutor(max(1, workers)) as pool, \
            tqdm(total=len(jobs), desc="synthesizing", unit="utt", disable=not progress) as bar:
        for indices, clips in pool.map(run, chunks):
            for index, audio in zip(indices, clips):
                results[index] = audio
            bar.update(len(indices))
    return results


def _finish(audio: np.ndarray, rate: int, voice: Voice) -> np.ndarray:
    """An engine's clip as 16 kHz float32 mono, whispered when the voice asks for it."""
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    waveform = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
    if rate != SAMPLING_RATE:
        waveform = torchaudio.functional.resample(waveform, rate, SAMPLING_RATE)
    if voice.whisper:
        waveform = whispered(waveform)
    if waveform.numel() == 0 or not torch.isfinite(waveform).all() or waveform.abs().max() == 0:
        raise RuntimeError(f"{voice.engine} produced no usable audio for voice {voice.name!r}")
    return waveform.numpy()


def whispered(waveform: torch.Tensor, n_fft: int = 512, hop: int = 128, lifter: int = 24) -> torch.Tensor:
    """`waveform` [samples] (16 kHz) as a whisper: its spectral envelope (the low quefrencies of the log
    spectrum, which carry the formants and not the harmonics of the voice's pitch) over noise of random phase,
    at a third of the original loudness."""
    window = torch.hann_window(n_fft)
    spectrum = torch.stft(waveform, n_fft, hop, window=window, return_complex=True)
    cepstrum = torch.fft.irfft(spectrum.abs().clamp_min(1e-5).log(), n=n_fft, dim=0)
    cepstrum[lifter:n_fft - lifter + 1] = 0
    envelope = torch.fft.rfft(cepstrum, dim=0).real.exp()
    generator = torch.Generator().manual_seed(int(waveform.numel()))  # same input, same whisper
    phase = torch.rand(envelope.shape, generator=generator) * 2 * torch.pi
    noise = torch.istft(torch.polar(envelope, phase), n_fft, hop, window=window, length=waveform.numel())
    return noise * (root_mean_square(waveform) / max(root_mean_square(noise), 1e-8) / 3)


def root_mean_square(waveform: torch.Tensor) -> float:
    """The RMS of `waveform` [samples], summed by numpy in float64: torch's parallel sums round differently with the
    number of threads, and the corpus must be the same bytes whatever the machine's thread count."""
    samples = waveform.numpy().astype(np.float64)
    return float(np.sqrt(np.mean(samples * samples)))


def read_wav(data: bytes) -> tuple[np.ndarray, int]:
    """float32 samples and sampling rate of WAV bytes."""
    audio, rate = soundfile.read(io.BytesIO(data), dtype="float32")
    return audio, rate


def encode_flac(audio: np.ndarray) -> bytes:
    """16-bit FLAC bytes of 16 kHz mono audio (the bit depth the engines themselves write)."""
    buffer = io.BytesIO()
    soundfile.write(buffer, np.clip(audio, -1.0, 1.0), SAMPLING_RATE, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()
