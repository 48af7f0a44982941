"""The text a model speaks, as espeak-ng phonemes (`DualSpeechLMProcessor.spoken_text_phonemes`).

Read as written, each word's USTokens are learnt word by word; read as phonemes (espeak-ng's ASCII mnemonics, `-x`:
"did kate" -> "d'Id k'eIt"), every word that shares a sound shares what was learnt of it. Imports only the standard
library, so a saved model folder's processor can use it; espeak-ng itself must be installed (`apt-get install
espeak-ng`).
"""

from __future__ import annotations

import re
import shutil
import subprocess

_CLAUSE_BREAKS = re.compile(r"[.,;:!?\n\r]+")  # espeak-ng starts a new output line at each: one line per text without
_CACHE: dict[tuple[str, str], str] = {}


def _espeak(texts: list[str], language: str) -> list[str]:
    """espeak-ng's output lines for `texts` (one per line of input) in one process."""
    binary = shutil.which("espeak-ng")
    if binary is None:
        raise RuntimeError("this model reads the text it speaks as espeak-ng phonemes (the processor's "
                           "spoken_text_phonemes), but espeak-ng is not installed: `apt-get install espeak-ng`")
    result = subprocess.run([binary, "-q", "-x", "-v", language], input="".join(text + "\n" for text in texts),
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"espeak-ng -v {language} failed: {result.stderr.strip()}")
    return [line.strip() for line in result.stdout.splitlines()]


def phonemize(texts: list[str], language: str = "en-us") -> list[str]:
    """Each text as espeak-ng phonemes in `language` (an espeak-ng voice), words separated by spaces. Texts seen
    before come from a cache; the others go to one espeak-ng process (one per text where it splits a text over lines).

    >>> phonemize(["did kate take the bag"])  # doctest: +SKIP
    ["d'Id k'eIt t'eIk D@2 b'ag"]
    """
    missing = sorted({text for text in texts if (text, language) not in _CACHE})
    if missing:
        plain = [" ".join(_CLAUSE_BREAKS.sub(" ", text).split()) for text in missing]
        lines = _espeak(plain, language)
        if len(lines) != len(plain):  # a clause too long for espeak-ng: each text alone
            lines = [" ".join(_espeak([text], language)) for text in plain]
        _CACHE.update({(text, language): line for text, line in zip(missing, lines)})
    return [_CACHE[text, language] for text in texts]


__all__ = ["phonemize"]
