"""espeak-ng voices: formant synthesis, `-v {language}+{variant}`, 22,050 Hz out.

A voice's `rate` scales espeak-ng's default 175 words per minute and its `pitch` the default pitch setting 50
(of 0..99).
"""

from __future__ import annotations

import functools
import subprocess

import numpy as np

from .synthesis import Voice, engine_binary, read_wav

DEFAULT_WORDS_PER_MINUTE = 175
DEFAULT_PITCH = 50


@functools.cache
def installed(kind: str) -> frozenset[str]:
    """The espeak-ng language voices (kind="") or variants (kind="variant") installed here."""
    listing = subprocess.run(
        [engine_binary("espeak-ng"), f"--voices={kind}" if kind else "--voices"],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()[1:]
    column = 4 if kind else 1  # variants are named by file ("!v/m3"), languages by code
    names = {line.split()[column].removeprefix("!v/") for line in listing if len(line.split()) > column}
    if not kind:  # a language voice can also be named by its file ("gmw/en-GB-scotland")
        names |= {line.split()[4].split("/")[-1].lower() for line in listing if len(line.split()) > 4}
    return frozenset(names)


def settings(voice: Voice) -> tuple[str, str, int, int]:
    """Language voice, variant, words per minute and pitch setting of an espeak-ng `voice`."""
    language, _, variant = voice.speaker.partition("+")
    return language, variant, round(DEFAULT_WORDS_PER_MINUTE * voice.rate), round(DEFAULT_PITCH * voice.pitch)


def check(voice: Voice) -> None:
    language, variant, words_per_minute, pitch = settings(voice)
    if language.lower() not in installed(""):
        raise ValueError(f"voice {voice.name!r}: espeak-ng has no language voice {language!r} "
                         "(see `espeak-ng --voices`)")
    if variant and variant not in installed("variant"):
        raise ValueError(f"voice {voice.name!r}: espeak-ng has no variant {variant!r} "
                         "(see `espeak-ng --voices=variant`)")
    if not (80 <= words_per_minute <= 450 and 0 <= pitch <= 99):
        raise ValueError(f"voice {voice.name!r}: espeak-ng needs 80..450 words per minute and a pitch in 0..99, "
                         f"got {words_per_minute} and {pitch}")


def synthesize(texts: list[str], voice: Voice) -> list[tuple[np.ndarray, int]]:
    """Audio and sampling rate of each text, one espeak-ng process each."""
    _, _, words_per_minute, pitch = settings(voice)
    clips = []
    for text in texts:
        result = subprocess.run(
            [engine_binary("espeak-ng"), "-v", voice.speaker, "-s", str(words_per_minute), "-p", str(pitch),
             "--stdout", "--", text], capture_output=True,
        )
        if result.returncode != 0 or not result.stdout:
            raise RuntimeError(f"espeak-ng failed for voice {voice.name!r} on {text!r}: "
                               f"{result.stderr.decode(errors='replace')}")
        clips.append(read_wav(result.stdout))
    return clips


def version() -> str:
    return subprocess.run([engine_binary("espeak-ng"), "--version"], capture_output=True, text=True).stdout.strip()
