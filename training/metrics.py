"""Text normalisation and corpus-level WER / CER, shared by every evaluation in the project.

Pure text: no models are loaded here. Every WER the project reports goes through
`normalize_text` on both sides, so numbers from different judges and recipes are comparable.
"""

from __future__ import annotations

import re
import unicodedata

import jiwer

__all__ = ["normalize_text", "number_to_words", "word_error_rate", "char_error_rate"]

_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen " \
        "fifteen sixteen seventeen eighteen nineteen".split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()

# Typographic single quotes / apostrophe look-alikes and double quotes.
_SINGLE_QUOTES = str.maketrans({c: "'" for c in "\u2018\u2019\u201a\u201b\u2032\u02bc`\u00b4"})
_DOUBLE_QUOTES = str.maketrans({c: '"' for c in "\u201c\u201d\u201e\u201f\u2033\u00ab\u00bb"})


def number_to_words(n: int) -> str:
    """Spell an integer 0..9999 in English without hyphens or "and" ("421" -> "four hundred twenty one")."""
    if not 0 <= n <= 9999:
        raise ValueError(f"number_to_words handles 0..9999, got {n}")
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        head, rest = _ONES[n // 100] + " hundred", n % 100
    else:
        head, rest = _ONES[n // 1000] + " thousand", n % 1000
    return head if rest == 0 else head + " " + number_to_words(rest)


def _spell_number(match: re.Match) -> str:
    digits = match.group(0)
    if len(digits) > 1 and digits.startswith("0"):
        # "007" is read digit by digit, not as "seven".
        return " ".join(_ONES[int(d)] for d in digits)
    value = int(digits)
    # Beyond 9999 the spoken form is ambiguous (years, phone numbers); leave the digits.
    return number_to_words(value) if value <= 9999 else digits


def normalize_text(text: str) -> str:
    """Normalise a transcript for WER: the same rules for references and hypotheses.

    Examples: "Two cats!" and "2 cats" both give "two cats"; "Anna’s red-hat." gives
    "anna's red hat".
    """
    # NFKC folds compatibility forms (full-width letters, ligatures, superscript digits, NBSP)
    # into their plain equivalents so that visually identical strings compare equal.
    text = unicodedata.normalize("NFKC", text)
    # Case carries no information an ASR judge can recover from audio.
    text = text.lower()
    # Curly quotes -> straight: text corpora and ASR outputs disagree on typography, and the
    # apostrophe rule below must see one apostrophe character.
    text = text.translate(_SINGLE_QUOTES).translate(_DOUBLE_QUOTES)
    # Thousands separators and decimal points belong to the number, not to punctuation:
    # "1,000" -> "1000" (-> "one thousand"), "3.5" -> "3 point 5" (-> "three point five").
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)
    text = re.sub(r"(?<=\d)\.(?=\d)", " point ", text)
    # Hyphens and dashes (Unicode category Pd) separate words: "red-hat" and "red hat" are
    # spoken the same, and Whisper writes "twenty-one" where a corpus may write "twenty one".
    text = "".join(" " if unicodedata.category(c) == "Pd" else c for c in text)
    # Apostrophes inside words are part of the word ("anna's", "don't"); quote-like ones at a
    # word edge ("'hello'", "cats'") are punctuation and go.
    text = re.sub(r"(?<!\w)'|'(?!\w)", "", text)
    # All other punctuation and symbols become spaces: they are not spoken, and a space (not
    # deletion) keeps "end.start" or "a/b" as two words.
    text = "".join(" " if unicodedata.category(c)[0] in "PS" and c != "'" else c for c in text)
    # Digits -> English words for whole-token integers 0..9999: Whisper writes "2 cats" for
    # "two cats". Tokens like "2nd" or "mp3" are left alone.
    text = re.sub(r"\b\d+\b", _spell_number, text)
    # Collapse runs of whitespace (including newlines and tabs) and trim the ends.
    return " ".join(text.split())


def _check_lists(references: list[str], hypotheses: list[str]) -> None:
    if isinstance(references, str) or isinstance(hypotheses, str):
        raise TypeError("references and hypotheses must be lists of strings, not single strings")
    if len(references) != len(hypotheses):
        raise ValueError(
            f"references and hypotheses differ in length: {len(references)} references vs "
            f"{len(hypotheses)} hypotheses (one hypothesis per reference is required)"
        )
    if len(references) == 0:
        raise ValueError("the reference list is empty: an error rate needs at least one reference")


def _error_rate(references: list[str], hypotheses: list[str], unit: str) -> float:
    """Corpus-level error rate: total edits over total reference units (words or characters).

    Empty references (after normalisation) are kept out of jiwer and handled here: every unit of
    their hypothesis counts as an insertion and they add nothing to the denominator. If every
    reference is empty the denominator is zero; the rate is then 0.0 when no hypothesis unit was
    produced and 1.0 (capped, "all wrong") otherwise, rather than a division by zero.
    """
    _check_lists(references, hypotheses)
    refs = [normalize_text(r) for r in references]
    hyps = [normalize_text(h) for h in hypotheses]
    count = (lambda s: len(s.split())) if unit == "word" else len
    edits = sum(count(h) for r, h in zip(refs, hyps) if not r)
    pairs = [(r, h) for r, h in zip(refs, hyps) if r]
    total = sum(count(r) for r, _ in pairs)
    if pairs:
        process = jiwer.process_words if unit == "word" else jiwer.process_characters
        out = process([r for r, _ in pairs], [h for _, h in pairs])
        edits += out.substitutions + out.deletions + out.insertions
    if total == 0:
        return 0.0 if edits == 0 else 1.0
    return edits / total


def word_error_rate(references: list[str], hypotheses: list[str]) -> float:
    """Corpus WER: (substitutions + deletions + insertions) / reference words, after `normalize_text`."""
    return _error_rate(references, hypotheses, "word")


def char_error_rate(references: list[str], hypotheses: list[str]) -> float:
    """Corpus CER over characters of the normalised text (single spaces between words count).

    Same conventions as `word_error_rate`; the denominator is the number of reference characters.
    """
    return _error_rate(references, hypotheses, "char")
