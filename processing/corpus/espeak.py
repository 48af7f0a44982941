"""espeak-ng voices and synthesis at 16 kHz.

A `Voice` is an espeak-ng language voice, a variant (timbre), a rate and a pitch; that
combination is one "speaker" of the corpus. espeak-ng writes 22,050 Hz 16-bit PCM; we resample to
the 16 kHz that Whisper and the USTokenizer read.
"""

from __future__ import annotations

import functools
import io
import shutil
import subprocess
from dataclasses import dataclass, replace

import numpy as np
import soundfile
import torch
import torchaudio

SAMPLING_RATE = 16_000
ESPEAK_SAMPLING_RATE = 22_050


class EspeakNotFoundError(RuntimeError):
    pass


@dataclass(frozen=True)
class Voice:
    """One synthetic speaker: `espeak-ng -v {language}+{variant} -s {rate} -p {pitch}`."""

    name: str
    language: str  # an espeak-ng voice, e.g. "en-us", "en-gb-scotland", "es", "fr-fr"
    variant: str  # an espeak-ng variant file, e.g. "m3", "f2", "klatt", "whisper"
    rate: int  # words per minute (80..450)
    pitch: int  # 0..99

    def with_style(self, **changes) -> "Voice":
        """The same voice with some settings changed (e.g. `rate=280` for fast speech)."""
        return replace(self, **changes)


def espeak_binary() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        raise EspeakNotFoundError(
            "espeak-ng is required to synthesize the corpus but was not found on PATH; install it "
            "with `apt-get install espeak-ng` (`make setup` does this)."
        )
    return path


@functools.cache
def _installed(kind: str) -> frozenset[str]:
    """The espeak-ng language voices (kind="") or variants (kind="variant") installed here."""
    listing = subprocess.run(
        [espeak_binary(), f"--voices={kind}" if kind else "--voices"],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()[1:]
    column = 4 if kind else 1  # variants are named by file ("!v/m3"), languages by code
    names = {line.split()[column].removeprefix("!v/") for line in listing if len(line.split()) > column}
    if not kind:  # a language voice can also be named by its file ("gmw/en-GB-scotland")
        names |= {line.split()[4].split("/")[-1].lower() for line in listing if len(line.split()) > 4}
    return frozenset(names)


def check_voice(voice: Voice) -> None:
    """Raise ValueError unless espeak-ng here has the voice's language and variant."""
    if voice.language.lower() not in _installed(""):
        raise ValueError(
            f"voice {voice.name!r}: espeak-ng has no language voice {voice.language!r} "
            f"(see `espeak-ng --voices`)"
        )
    if voice.variant not in _installed("variant"):
        raise ValueError(
            f"voice {voice.name!r}: espeak-ng has no variant {voice.variant!r} "
            f"(see `espeak-ng --voices=variant`)"
        )
    if not (80 <= voice.rate <= 450 and 0 <= voice.pitch <= 99):
        raise ValueError(f"voice {voice.name!r}: rate must be in 80..450 and pitch in 0..99")


def synthesize(text: str, voice: Voice) -> np.ndarray:
    """Speak `text` with `voice`; returns float32 mono audio at 16 kHz, shape [samples]."""
    if not text or not text.strip():
        raise ValueError("cannot synthesize empty text")
    check_voice(voice)
    result = subprocess.run(
        [espeak_binary(), "-v", f"{voice.language}+{voice.variant}", "-s", str(voice.rate),
         "-p", str(voice.pitch), "--stdout", "--", text],
        capture_output=True,
    )
    if result.returncode != 0 or not result.stdout:
        raise RuntimeError(
            f"espeak-ng failed for voice {voice.name!r} on {text!r}: {result.stderr.decode(errors='replace')}"
        )
    audio, rate = soundfile.read(io.BytesIO(result.stdout), dtype="float32")
    resampled = torchaudio.functional.resample(torch.from_numpy(audio), rate, SAMPLING_RATE)
    return resampled.numpy()


def encode_flac(audio: np.ndarray) -> bytes:
    """16-bit FLAC bytes of 16 kHz mono audio (the bit depth espeak-ng itself writes)."""
    buffer = io.BytesIO()
    soundfile.write(buffer, np.clip(audio, -1.0, 1.0), SAMPLING_RATE, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()
