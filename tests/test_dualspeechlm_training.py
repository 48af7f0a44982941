"""Stage 3: the task sequences, the collator, and the recipe end to end on the tiny corpus with tiny parts."""

import json

import numpy as np
import pytest
import torch

from dualspeechlm.codecs import MelCodecConfig, MelCodecModel
from dualspeechlm.configuration_dualspeechlm import DualSpeechLMConfig
from dualspeechlm.configuration_ustokenizer import USTokenizerConfig
from dualspeechlm.feature_extraction_ustokenizer import USTokenizerFeatureExtractor
from dualspeechlm.modeling_ustokenizer import USTokenizerModel
from dualspeechlm.processing.text_tokenizer import train_text_tokenizer
from dualspeechlm.speaker_encoder import SpeakerEncoderConfig, SpeakerEncoderModel
from dualspeechlm.tasks import build_inputs
from dualspeechlm.training.multitask import DualSpeechLMCollator
from dualspeechlm.training.text_llm import small_llm_config
from dualspeechlm.training.train_dualspeechlm import DualSpeechLMRecipe, train_dualspeechlm

pytestmark = pytest.mark.usefixtures("one_thread")

EXAMPLES = [
    {"task": "asr", "speech_ids": [3, 1, 4], "answer": "anna saw the cat"},
    {"task": "tts", "text": "the cat", "answer_speech_ids": [5, 9], "codes": np.arange(6).reshape(2, 3),
     "speaker": np.full(512, 0.5, np.float32)},
    {"task": "sqa", "speech_ids": [2, 7], "question": "who saw the cat?", "answer": "anna"},
]


@pytest.fixture(scope="module")
def tokenizer():
    return train_text_tokenizer(["anna saw the cat", "who saw the cat?", "the dog"] * 5, vocab_size=300)


def speech_config(tokenizer) -> DualSpeechLMConfig:
    """Text ids, then <audio> </audio> (already in the tokenizer), then 16 USTokens."""
    vocab = len(tokenizer)
    text = dict(vocab_size=vocab + 16, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id)
    return DualSpeechLMConfig.tiny(num_speech_tokens=16, text_overrides=text,
                                   audio_start_token_id=tokenizer.convert_tokens_to_ids("<audio>"),
                                   audio_end_token_id=tokenizer.convert_tokens_to_ids("</audio>"), speech_token_offset=vocab)


def test_build_inputs_marks_prompt_answer_and_speech_ids(tokenizer):
    config = speech_config(tokenizer)
    batch = build_inputs(tokenizer, config, EXAMPLES, with_answers=True)
    assert batch["tasks"] == ["asr", "tts", "sqa"]
    for row, example in enumerate(EXAMPLES):
        ids = batch["input_ids"][row][batch["attention_mask"][row].bool()].tolist()
        prompt = int(batch["condition_mask"][row].sum())
        labels = batch["labels"][row]
        assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
        assert (labels[:prompt] == -100).all() and labels[prompt : len(ids)].tolist() == ids[prompt:]
        speech = [i - config.speech_token_offset for i in ids if config.is_speech_token(i)]
        if example["task"] == "tts":  # text prompt, speech answer <audio> <a_k>.. </audio> EOS
            assert ids[prompt:] == [config.audio_start_token_id, *[config.speech_token_offset + i for i in (5, 9)],
                                    config.audio_end_token_id, tokenizer.eos_token_id]
            assert speech == [5, 9]
        else:
            assert speech == example["speech_ids"]
            assert tokenizer.decode(ids[prompt:], skip_special_tokens=True).strip() == example["answer"]
    left = build_inputs(tokenizer, config, EXAMPLES, with_answers=False, padding_side="left")
    assert "labels" not in left and left["attention_mask"][:, -1].all()
    for row in range(3):  # the same prompt tokens, padded on the other side
        right_prompt = batch["input_ids"][row][batch["condition_mask"][row].bool()]
        assert torch.equal(left["input_ids"][row][left["attention_mask"][row].bool()], right_prompt)


@pytest.mark.parametrize("bad, match", [
    ({"task": "dance"}, "unknown task"),
    ({"task": "asr", "answer": "x"}, "needs the USTokens"),
    ({"task": "tts", "text": "  ", "answer_speech_ids": [1]}, "empty text"),
    ({"task": "sqa", "speech_ids": [1], "answer": "x"}, "needs the field 'question'"),
])
def test_build_inputs_rejects_bad_examples(tokenizer, bad, match):
    with pytest.raises(ValueError, match=match):
        build_inputs(tokenizer, speech_config(tokenizer), [bad], with_answers=True)


def test_collator_pads_codes_and_zeroes_understanding_speakers(tokenizer):
    batch = DualSpeechLMCollator(tokenizer, speech_config(tokenizer))(EXAMPLES)
    assert batch["acoustic_codes"].shape == (3, 2, 3) and batch["acoustic_lengths"].tolist() == [1, 3, 1]
    assert batch["acoustic_codes"][1].tolist() == [[0, 1, 2], [3, 4, 5]]
    assert batch["speaker_embeddings"][[0, 2]].abs().sum() == 0 and (batch["speaker_embeddings"][1] == 0.5).all()


def test_recipe_trains_saves_and_evaluates_on_the_tiny_corpus(tiny_corpus, whisper_dir, tmp_path):
    """Tiny random parts stand in for stages 1 and 2; a few steps of stage 3, then the evaluation."""
    from dualspeechlm.processing_dualspeechlm import DualSpeechLMProcessor
    from dualspeechlm.training.evaluate_dualspeechlm import evaluate_model

    torch.manual_seed(0)
    ustokenizer = USTokenizerModel.from_whisper(whisper_dir, USTokenizerConfig.tiny(
        conv_hidden_size=16, codebook_dim=8, codebook_size=32, llm_hidden_size=32)).eval()
    ustokenizer.save_pretrained(tmp_path / "ust")
    USTokenizerFeatureExtractor().save_pretrained(tmp_path / "ust")
    text = ["anna saw the cat", "the speaker talks fast", "who has the red lamp?"] * 10
    tokenizer = train_text_tokenizer(text, 300)
    from transformers import LlamaForCausalLM

    LlamaForCausalLM(small_llm_config(tokenizer, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=2)).save_pretrained(tmp_path / "ust" / "text_llm")
    tokenizer.save_pretrained(tmp_path / "ust" / "text_llm")
    MelCodecModel(MelCodecConfig(hidden_size=16, latent_size=8, num_quantizers=2, codebook_size=16,
                                 vocoder="griffin_lim", griffin_lim_iterations=2)).eval().save_pretrained(tmp_path / "codec")
    SpeakerEncoderModel(SpeakerEncoderConfig(hidden_size=16, stats_size=16, attention_size=8)).eval().save_pretrained(tmp_path / "spk")

    recipe = DualSpeechLMRecipe.tiny(
        corpus=str(tiny_corpus), ustokenizer=str(tmp_path / "ust"), codec=str(tmp_path / "codec"),
        speaker_encoder=str(tmp_path / "spk"), output_dir=str(tmp_path / "model"), cache_dir=str(tmp_path / "cache"),
        acoustic_config=dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32),
        steps=3, batch_size=2, logging_steps=1, warmup_steps=1, save_steps=100)
    folder = train_dualspeechlm(recipe)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "loss.png", "ustokenizer/config.json",
                 "codec/config.json", "speaker_encoder/config.json"):
        assert (folder / name).is_file(), name
    log = json.loads((folder / "training_log.json").read_text())
    assert {"llm_loss", "acoustic_loss"} <= set(log[0])
    config = json.loads((folder / "config.json").read_text())
    assert set(config["custom_pipelines"]) >= {"automatic-speech-recognition", "text-to-speech"}
    processor = DualSpeechLMProcessor.from_pretrained(folder)
    assert processor.codec.num_codebooks == 2 and processor.ustokenizer.config.codebook_size == 32

    results = evaluate_model(folder, str(tiny_corpus), str(tmp_path / "cache"), str(whisper_dir),
                             limits={"asr": 2, "tts": 2, "ser": 2})
    for split in ("test", "test_unseen_voice"):
        scores = results["splits"][split]
        assert 0 <= scores["asr"]["wer"] and 0 <= scores["ser"]["accuracy"] <= 1
        assert "whisper_wer_generated" in scores["tts"] and -1 <= scores["tts"]["sim"] <= 1
    assert (folder / "evaluation.md").is_file() and any((folder / "samples").glob("*.wav"))
