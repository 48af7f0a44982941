"""Text normalisation and corpus-level WER / CER on hand-computed cases."""

import pytest

from dualspeechlm.training.metrics import char_error_rate, normalize_text, number_to_words, word_error_rate


@pytest.mark.parametrize("text, expected", [
    ("Two cats!", "two cats"),
    ("2 cats", "two cats"),
    ("Anna's red-hat.", "anna's red hat"),
    ("Anna\u2019s red\u2013hat.", "anna's red hat"),            # curly apostrophe, en dash
    ("\u201cHello,\u201d she said.", "hello she said"),          # curly double quotes
    ("  the   cat\t\n sat  ", "the cat sat"),                    # extra whitespace
    ("'quoted' cats' toys", "quoted cats toys"),                 # edge apostrophes are quotes
    ("don't STOP", "don't stop"),
    ("\uff34he \ufb01ne cat", "the fine cat"),                   # NFKC: full-width T, fi ligature
    ("end.Start a/b", "end start a b"),                          # punctuation separates words
    ("at 7 or 13, 40 or 105", "at seven or thirteen forty or one hundred five"),
    ("1,000 and 2024", "one thousand and two thousand twenty four"),
    ("9999 10000", "nine thousand nine hundred ninety nine 10000"),  # beyond 9999: digits kept
    ("3.5 and 007", "three point five and zero zero seven"),
    ("the 2nd mp3", "the 2nd mp3"),                              # digits inside words untouched
    ("twenty-one", "twenty one"),
    ("", ""),
])
def test_normalize_text(text, expected):
    assert normalize_text(text) == expected


def test_number_to_words():
    assert number_to_words(0) == "zero"
    assert number_to_words(20) == "twenty"
    assert number_to_words(1010) == "one thousand ten"
    with pytest.raises(ValueError, match="0..9999"):
        number_to_words(10000)


def test_normalisation_makes_equivalent_transcripts_match():
    assert word_error_rate(["Two cats!"], ["2 cats"]) == 0.0
    assert word_error_rate(["Anna\u2019s red-hat."], ["anna's red hat"]) == 0.0
    assert char_error_rate(["  Hello,   World "], ["hello world"]) == 0.0


def test_substitution():
    # 1 substituted word of 6; 1 substituted character ("m" -> "h") of 22 (spaces count).
    assert word_error_rate(["the cat sat on the mat"], ["the cat sat on the hat"]) == pytest.approx(1 / 6)
    assert char_error_rate(["the cat sat on the mat"], ["the cat sat on the hat"]) == pytest.approx(1 / 22)


def test_insertion():
    # 1 inserted word over 3 reference words; " down" = 5 inserted characters over 11.
    assert word_error_rate(["the cat sat"], ["the cat sat down"]) == pytest.approx(1 / 3)
    assert char_error_rate(["the cat sat"], ["the cat sat down"]) == pytest.approx(5 / 11)


def test_deletion():
    assert word_error_rate(["the cat sat down"], ["the cat sat"]) == pytest.approx(1 / 4)
    assert char_error_rate(["the cat sat down"], ["the cat sat"]) == pytest.approx(5 / 16)


def test_rates_are_corpus_level_not_averaged():
    # 1 substitution + 1 deletion over 6 reference words = 1/3 (the mean of 1/4 and 1/2 would be 3/8).
    assert word_error_rate(["a b c d", "e f"], ["a x c d", "e"]) == pytest.approx(1 / 3)
    assert char_error_rate(["abc", "de"], ["abd", "de"]) == pytest.approx(1 / 5)


def test_empty_references_count_hypothesis_words_as_insertions():
    assert word_error_rate(["", "a b"], ["x y", "a b"]) == pytest.approx(2 / 2)
    assert word_error_rate(["!!", "a b c d"], ["x", "a b c d"]) == pytest.approx(1 / 4)  # "!!" normalises to ""
    assert word_error_rate(["", ""], ["", ""]) == 0.0
    assert word_error_rate([""], ["something"]) == 1.0  # nothing to divide by: capped at 1
    assert word_error_rate(["a b"], [""]) == 1.0          # an empty hypothesis deletes everything
    assert char_error_rate(["", "ab"], ["xyz", "ab"]) == pytest.approx(3 / 2)


def test_bad_arguments():
    with pytest.raises(ValueError, match="differ in length: 2 references vs 1 hypotheses"):
        word_error_rate(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="differ in length"):
        char_error_rate(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="reference list is empty"):
        word_error_rate([], [])
    with pytest.raises(TypeError, match="lists of strings"):
        word_error_rate("a b", "a b")
