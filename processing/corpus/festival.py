"""festival voices: the HTS voice `cmu_us_slt_arctic_hts` (CMU ARCTIC, built from real recordings; Debian
`festvox-us-slt-hts`) and the diphone voices `kal_diphone` and `ked_diphone` (`festvox-kallpc16k`,
`festvox-kdlpc16k`).

festival takes about a second to start, so one process speaks a whole list of texts. A voice's `rate` becomes
the HTS engine's speed ratio, or a diphone voice's `Duration_Stretch` (its inverse); its pitch stays the voice's
own.
"""

from __future__ import annotations

import functools
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from .synthesis import Voice, engine_binary, read_wav

# The Debian package that installs each voice the corpus may use.
VOICE_PACKAGES = {"cmu_us_slt_arctic_hts": "festvox-us-slt-hts", "kal_diphone": "festvox-kallpc16k",
                  "ked_diphone": "festvox-kdlpc16k"}


def _run(commands: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([engine_binary("festival"), "--pipe"], input="\n".join(commands).encode(),
                          capture_output=True)


@functools.cache
def installed() -> frozenset[str]:
    """The voices this festival can load (`(voice.list)`)."""
    output = _run(["(print (voice.list))"]).stdout.decode(errors="replace")
    return frozenset(output.replace("(", " ").replace(")", " ").split())


def check(voice: Voice) -> None:
    if voice.speaker not in installed():
        package = VOICE_PACKAGES.get(voice.speaker)
        hint = f"; install it with `apt-get install {package}`" if package else ""
        raise ValueError(f"voice {voice.name!r}: festival has no voice {voice.speaker!r}{hint}")
    if voice.pitch != 1:
        raise ValueError(f"voice {voice.name!r}: festival voices speak at their own pitch; use pitch 1")


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def synthesize(texts: list[str], voice: Voice) -> list[tuple[np.ndarray, int]]:
    """Audio and sampling rate of each text, all spoken by one festival process."""
    with tempfile.TemporaryDirectory(prefix="festival-") as folder:
        paths = [Path(folder) / f"{index}.wav" for index in range(len(texts))]
        # diphone voices follow Duration_Stretch, HTS voices their engine's speed ratio `-r`
        commands = [f"(voice_{voice.speaker})", f"(Parameter.set 'Duration_Stretch {1 / voice.rate:.4f})",
                    f'(set! hts_engine_params (append hts_engine_params (list (list "-r" {voice.rate:.4f}))))']
        commands += [f"(utt.save.wave (utt.synth (Utterance Text {_quoted(text)})) {_quoted(str(path))} 'riff)"
                     for text, path in zip(texts, paths)]
        result = _run(commands)
        missing = [text for text, path in zip(texts, paths) if not path.is_file()]
        if result.returncode != 0 or missing:
            raise RuntimeError(f"festival failed for voice {voice.name!r} on {missing[:1]}: "
                               f"{result.stderr.decode(errors='replace')[-500:]}")
        return [read_wav(path.read_bytes()) for path in paths]


def version() -> str:
    result = subprocess.run([engine_binary("festival"), "--version"], capture_output=True, text=True)
    return result.stdout.strip()
