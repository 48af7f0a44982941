"""The spoken text as espeak-ng phonemes: `phonemize`, and the TTS prompts built from it."""

import pytest

from dualspeechlm import phonemes
from dualspeechlm.phonemes import phonemize
from dualspeechlm.testing_utils import tiny_random_model_and_processor

pytestmark = pytest.mark.usefixtures("espeak")


def test_phonemize_writes_espeak_ng_phonemes_one_per_text_and_caches_them(monkeypatch):
    texts = ["did kate take the bag", "Hello there. How are you?", "did kate take the bag"]
    said = phonemize(texts)
    assert said[0] == "d'Id k'eIt t'eIk D@2 b'ag" and said[2] == said[0]
    assert "\n" not in said[1] and said[1].startswith("h@l'oU") and "h'aU" in said[1]  # two clauses, one line
    assert phonemize(["did kate"], "en-us") != phonemize(["did kate"], "fr-fr")  # the voice's language reads it
    calls = []
    monkeypatch.setattr(phonemes, "_espeak", lambda texts, language: calls.append(texts) or ["?"] * len(texts))
    assert phonemize(texts) == said and not calls  # from the cache
    assert phonemize(["a new sentence", "did kate take the bag"]) == ["?", said[0]] and calls == [["a new sentence"]]


def test_phonemize_without_espeak_ng_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(phonemes.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="apt-get install espeak-ng"):
        phonemize(["a sentence espeak-ng never saw"])


def test_tts_prompts_read_the_phonemes_and_mark_them_as_spoken(tmp_path):
    _, processor = tiny_random_model_and_processor(num_speech_tokens=32)
    examples = [{"task": "tts", "text": "did kate take the bag", "answer_speech_ids": [1, 2]},
                {"task": "asr", "speech_ids": [3], "answer": "did kate take the bag"},
                {"task": "t2st", "text": "did kate take the bag", "language": "fr", "answer_speech_ids": [4]}]
    written = processor.build_inputs(examples, with_answers=True)
    processor.spoken_text_phonemes = "en-us"
    sounded = processor.build_inputs(examples, with_answers=True)
    decode = processor.tokenizer.decode
    assert decode(sounded["input_ids"][0][sounded["spoken_text_mask"][0].bool()]).strip() == phonemize(
        ["did kate take the bag"])[0]
    for row in (1, 2):  # ASR's answer and T2ST's text (it speaks a translation) stay as written
        assert decode(sounded["input_ids"][row]) == decode(written["input_ids"][row])
    assert "k'eIt" in decode(processor(task="tts", text="did kate take the bag")["input_ids"][0])

    processor.save_pretrained(tmp_path)
    assert type(processor).from_pretrained(tmp_path).spoken_text_phonemes == "en-us"
    assert type(processor).from_pretrained(tmp_path, spoken_text_phonemes=None).spoken_text_phonemes is None
