import pytest
from transformers import AutoTokenizer

from dualspeechlm.processing.text_tokenizer import train_text_tokenizer
from dualspeechlm.tasks import GENERATION_TASKS, TASKS, UNDERSTANDING_TASKS, answer_text, get_task, prompt_parts

SENTENCES = ["anna saw the red cat today", "the old horse slept behind the bridge", "who has the yellow lamp?",
             "el gato rojo duerme", "le chat rouge dort"] * 4


def test_eight_tasks_split_into_understanding_and_generation():
    assert set(TASKS) == {"asr", "s2tt", "ser", "sqa", "tts", "vc", "t2st", "sc"}
    assert set(UNDERSTANDING_TASKS) == {"asr", "s2tt", "ser", "sqa"}
    assert set(GENERATION_TASKS) == {"tts", "vc", "t2st", "sc"}


def test_prompt_parts_wrap_the_speech_span_and_fill_fields():
    before, after = prompt_parts("sqa", question="who has the lamp?")
    assert before == "USER: <audio>"
    assert after == "</audio> Answer the question about the speech: who has the lamp?\nASSISTANT:"
    assert prompt_parts("s2tt", language="es")[1].startswith("</audio> Translate the speech into Spanish.")
    tts_before, tts_after = prompt_parts("tts", text="hello there")
    assert tts_before == "USER: Speak this text: hello there\nASSISTANT:" and tts_after == ""
    assert answer_text("  nick ") == " nick"


def test_prompt_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown task 'dance'"):
        get_task("dance")
    with pytest.raises(ValueError, match="needs the field 'question'"):
        prompt_parts("sqa")


def test_text_tokenizer_round_trips_and_saves(tmp_path):
    tokenizer = train_text_tokenizer(SENTENCES, vocab_size=300)
    assert len(tokenizer) <= 300
    for special in ("<s>", "</s>", "<pad>", "<unk>", "<audio>", "</audio>"):
        assert tokenizer.convert_tokens_to_ids(special) != tokenizer.unk_token_id or special == "<unk>"
    ids = tokenizer("anna saw the red cat").input_ids
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == "anna saw the red cat"
    # prompt and answer tokenized apart give the tokens of the whole (the reason for answer_text)
    prompt, answer = prompt_parts("asr")[1], answer_text("anna saw")
    together = tokenizer(prompt + answer, add_special_tokens=False).input_ids
    apart = (tokenizer(prompt, add_special_tokens=False).input_ids
             + tokenizer(answer, add_special_tokens=False).input_ids)
    assert together == apart
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded(SENTENCES[:3]).input_ids == tokenizer(SENTENCES[:3]).input_ids
    assert loaded.pad_token == "<pad>" and loaded.eos_token == "</s>"


def test_text_tokenizer_rejects_empty_text():
    with pytest.raises(ValueError, match="no text"):
        train_text_tokenizer(["", "   "])
