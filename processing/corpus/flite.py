"""flite voices: `slt`, `rms` and `awb` (CMU ARCTIC clustergen voices, built from real recordings) and the
diphone voice `kal16`, all 16 kHz.

A voice's `rate` becomes flite's `duration_stretch` (its inverse) and its `pitch` the target mean F0
(`int_f0_target_mean`, in Hz), which flite follows closely.
"""

from __future__ import annotations

import functools
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from .synthesis import Voice, engine_binary, read_wav

# The own mean F0 in Hz (the median pitch of its voiced speech) of each voice whose pitch flite can set; `pitch`
# scales it. flite's `rms` ignores the F0 target, so it speaks at its own pitch only.
MEAN_F0_HZ = {"slt": 173.0, "awb": 133.0, "kal16": 89.0, "kal": 89.0}


@functools.cache
def installed() -> frozenset[str]:
    """The voices this flite has built in (`flite -lv`)."""
    listing = subprocess.run([engine_binary("flite"), "-lv"], capture_output=True, text=True, check=True).stdout
    return frozenset(listing.split(":", 1)[-1].split())


def check(voice: Voice) -> None:
    if voice.speaker not in installed():
        raise ValueError(f"voice {voice.name!r}: flite has no voice {voice.speaker!r} (it has {sorted(installed())})")
    if voice.pitch != 1 and voice.speaker not in MEAN_F0_HZ:
        raise ValueError(f"voice {voice.name!r}: no mean F0 is known for flite's {voice.speaker!r}, so its pitch "
                         f"cannot be scaled; use pitch 1")


def synthesize(texts: list[str], voice: Voice) -> list[tuple[np.ndarray, int]]:
    """Audio and sampling rate of each text, one flite process each."""
    settings = ["--setf", f"duration_stretch={1 / voice.rate:.4f}"]
    if voice.pitch != 1:
        settings += ["--setf", f"int_f0_target_mean={MEAN_F0_HZ[voice.speaker] * voice.pitch:.1f}"]
    clips = []
    with tempfile.TemporaryDirectory(prefix="flite-") as folder:
        path = Path(folder) / "clip.wav"
        for text in texts:
            result = subprocess.run([engine_binary("flite"), "-voice", voice.speaker, *settings, "-t", text,
                                     "-o", str(path)], capture_output=True)
            if result.returncode != 0 or not path.is_file():
                raise RuntimeError(f"flite failed for voice {voice.name!r} on {text!r}: "
                                   f"{result.stderr.decode(errors='replace')}")
            clips.append(read_wav(path.read_bytes()))
            path.unlink()
    return clips


def version() -> str:
    result = subprocess.run([engine_binary("flite"), "--version"], capture_output=True, text=True)
    return next((line.strip() for line in result.stdout.splitlines() if "version" in line), result.stdout.strip())
