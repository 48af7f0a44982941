"""Stage 3: the task sequences, the collator, and the recipe end to end on the tiny corpus with tiny parts."""

import copy
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import pipeline

from dualspeechlm.codecs import MelCodecConfig, MelCodecModel, load_codec
from dualspeechlm.configuration_dualspeechlm import DualSpeechLMConfig
from dualspeechlm.configuration_ustokenizer import USTokenizerConfig
from dualspeechlm.feature_extraction_ustokenizer import USTokenizerFeatureExtractor
from dualspeechlm.modeling_dualspeechlm import DualSpeechLMForConditionalGeneration
from dualspeechlm.modeling_ustokenizer import USTokenizerModel
from dualspeechlm.processing.corpus import load_corpus
from dualspeechlm.processing.text_tokenizer import train_text_tokenizer
from dualspeechlm.processing_dualspeechlm import DualSpeechLMProcessor
from dualspeechlm.tasks import build_inputs
from dualspeechlm.training.multitask import DualSpeechLMCollator
from dualspeechlm.training.train_dualspeechlm import DualSpeechLMRecipe, train_dualspeechlm

from chromium import check_samples_page, markdown_links

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
                                   audio_end_token_id=tokenizer.convert_tokens_to_ids("</audio>"),
                                   speech_token_offset=vocab)


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
    # a cache without codes (AcousticGPT spared): the same batch, the voice kept, no acoustic targets
    without_codes = DualSpeechLMCollator(tokenizer, speech_config(tokenizer))(
        [{k: v for k, v in example.items() if k != "codes"} for example in EXAMPLES])
    assert "acoustic_codes" not in without_codes and "acoustic_lengths" not in without_codes
    assert torch.equal(without_codes["speaker_embeddings"], batch["speaker_embeddings"])
    assert torch.equal(without_codes["labels"], batch["labels"])


@pytest.fixture(scope="module")
def tiny_recipe(tiny_corpus, whisper_dir, tiny_parts, tmp_path_factory):
    """`tiny_recipe(output_dir, **overrides)`: stage 3 on the tiny corpus, with tiny random parts
    standing in for stages 1 and 2 and one token cache shared by the module's runs."""
    parts = tmp_path_factory.mktemp("stage3_parts")
    torch.manual_seed(0)
    ustokenizer = USTokenizerModel.from_whisper(whisper_dir, USTokenizerConfig.tiny(
        conv_hidden_size=16, codebook_dim=8, codebook_size=32, llm_hidden_size=32)).eval()
    ustokenizer.save_pretrained(parts / "ust")
    USTokenizerFeatureExtractor().save_pretrained(parts / "ust")
    shutil.copytree(tiny_parts / "text_llm", parts / "ust" / "text_llm")

    def recipe(output_dir, **overrides) -> DualSpeechLMRecipe:
        settings = dict(
            corpus=str(tiny_corpus), ustokenizer=str(parts / "ust"), codec=str(tiny_parts / "codec"),
            speaker_encoder=str(tiny_parts / "speaker_encoder"), output_dir=str(output_dir),
            cache_dir=str(parts / "cache"),
            acoustic_config=dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32),
            acoustic_loss_weight=1.0,  # AcousticGPT trained, the paper's path (the tiny preset spares it)
            steps=3, batch_size=2, logging_steps=1, warmup_steps=1, save_steps=100, eval_steps=0)
        return DualSpeechLMRecipe.tiny(**{**settings, **overrides})

    return recipe


def test_recipe_trains_saves_evaluates_and_fine_tunes_on_the_tiny_corpus(tiny_recipe, tiny_corpus, whisper_dir,
                                                                          tmp_path):
    """A few steps of stage 3, the evaluation, then a fine-tuning run that starts from the saved folder."""
    from dualspeechlm.training.evaluate_dualspeechlm import evaluate_model
    from dualspeechlm.training.evaluate_dualspeechlm import main as evaluate_main

    recipe = tiny_recipe(tmp_path / "model", eval_steps=2, eval_examples=1)
    folder = train_dualspeechlm(recipe)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "loss.png", "ustokenizer/config.json",
                 "speaker_encoder/config.json"):
        assert (folder / name).is_file(), name
    log = json.loads((folder / "training_log.json").read_text())
    assert {"llm_loss", "acoustic_loss"} <= set(log[0])
    assert [entry["step"] for entry in log if "eval_loss" in entry] == [2, 3]  # every 2 steps, and at the end
    config = json.loads((folder / "config.json").read_text())
    assert set(config["custom_pipelines"]) >= {"automatic-speech-recognition", "text-to-speech"}
    processor = DualSpeechLMProcessor.from_pretrained(folder)
    codec = DualSpeechLMForConditionalGeneration.from_pretrained(folder).codec_model  # the recipe's, inside the model
    assert torch.equal(codec.quantizer.codebooks, load_codec(recipe.codec).quantizer.codebooks)
    assert codec.num_codebooks == 2 and processor.ustokenizer.config.codebook_size == 32
    # the trained model writes codes its codec decodes: through generate(output_audio=True) and both pipelines
    model = DualSpeechLMForConditionalGeneration.from_pretrained(folder).eval()
    prompt = processor(task="tts", text="anna saw the cat")
    greedy = dict(max_new_tokens=6, acoustic_max_new_tokens=8, do_sample=False, acoustic_do_sample=False)
    speech = model.generate(prompt["input_ids"], prompt["attention_mask"], prompt["condition_mask"],
                            processor.default_speaker_embedding(), output_audio=True, **greedy)
    assert speech.codes.shape[1] == 2 and torch.equal(speech.waveform_lengths, codec.samples_for(speech.code_lengths))
    spoken = pipeline("text-to-speech", model=str(folder), trust_remote_code=True)("anna saw the cat",
                                                                                    generate_kwargs=greedy)
    assert spoken["sampling_rate"] == 16000 and np.array_equal(spoken["audio"], speech.audio_arrays()[0])
    heard = pipeline("automatic-speech-recognition", model=str(folder), trust_remote_code=True)(
        np.zeros(8000, np.float32) if spoken["audio"].size == 0 else spoken["audio"], sampling_rate=16000,
        generate_kwargs={"max_new_tokens": 4})
    assert isinstance(heard["text"], str)

    # the semantic-only comparison: the codec's decoder reading the written USTokens and the voice alone
    semantic = MelCodecModel(MelCodecConfig(**{**codec.config.to_dict(), "ustoken_vocab_size": 32,
                                               "ustoken_decode_codebooks": 0, "speaker_embedding_size": 512}))
    semantic.load_state_dict(codec.state_dict(), strict=False)
    semantic.save_pretrained(tmp_path / "semantic")
    results = evaluate_model(folder, str(tiny_corpus), recipe.cache_dir, str(whisper_dir),
                             limits={"asr": 2, "tts": 2, "ser": 2}, semantic_codec=tmp_path / "semantic")
    for split in ("test", "test_unseen_voice"):
        scores = results["splits"][split]
        assert 0 <= scores["asr"]["wer"] and 0 <= scores["ser"]["accuracy"] <= 1
        assert "whisper_wer_generated" in scores["tts"] and -1 <= scores["tts"]["sim"] <= 1
        assert "whisper_wer_generated" in scores["tts_resynthesis"]  # from the reference USTokens
        assert "pocketsphinx_wer_generated" in scores["tts_semantic"]  # the same USTokens, the other way of speaking
        assert scores["tts_semantic"]["whisper_wer_reference"] == scores["tts"]["whisper_wer_reference"]
        voices = load_corpus(str(tiny_corpus), "speech")[split].select(range(2))["speaker"]
        assert set(scores["tts"]["by_voice"]) == set(voices)
        assert ({"whisper_wer_generated", "whisper_wer_reference"}
                <= set(next(iter(scores["tts"]["by_voice"].values()))))
    report = (folder / "evaluation.md").read_text()
    assert "| TTS_SEMANTIC |" in report and "Per voice:" in report
    assert any((folder / "samples").glob("*.wav"))
    with pytest.raises(ValueError, match="decodes USTokens alone"):
        evaluate_model(folder, str(tiny_corpus), recipe.cache_dir, str(whisper_dir), limits={"tts": 1},
                       output_dir=tmp_path / "refused", semantic_codec=tiny_recipe(tmp_path).codec)

    # the CLI on a subset of the tasks with other USToken writing, written elsewhere: the model folder's own
    # evaluation stays
    saved = (folder / "evaluation.json").read_text()
    cli = ["--model", str(folder), "--corpus", str(tiny_corpus), "--cache-dir", recipe.cache_dir, "--whisper",
           str(whisper_dir), "--tasks", "asr", "sqa", "tts", "--limit", "2", "--speech-generation", "num_beams=2",
           "max_new_tokens=12"]
    with pytest.raises(SystemExit):  # other settings than the saved ones: not into the model folder
        evaluate_main(cli)
    evaluate_main(cli + ["--output-dir", str(tmp_path / "elsewhere")])
    subset = json.loads((tmp_path / "elsewhere" / "evaluation.json").read_text())
    assert {split: set(scores) for split, scores in subset["splits"].items()} == {
        "test": {"asr", "sqa", "tts", "tts_resynthesis"},
        "test_unseen_voice": {"asr", "sqa", "tts", "tts_resynthesis"}}
    assert subset["splits"]["test"]["asr"]["examples"] == 2
    assert subset["speech_generation"] == {**config["speech_generation"], "num_beams": 2, "max_new_tokens": 12}
    assert (folder / "evaluation.json").read_text() == saved

    # fine-tuning trains the same weights; the recipe's USToken decoding replaces the saved one (the tiny preset's
    # beam search)
    sampling = {"do_sample": True, "temperature": 0.8, "max_new_tokens": 7}
    tuned = train_dualspeechlm(tiny_recipe(tmp_path / "tuned", init_from=str(folder), steps=2,
                                           speech_generation=sampling))
    before, after = (load_file(path / "model.safetensors") for path in (folder, tuned))
    assert after.keys() == before.keys()
    assert any(not torch.equal(before[name], after[name]) for name in before), "fine-tuning changed nothing"
    tuned_config = json.loads((tuned / "config.json").read_text())
    assert tuned_config["text_config"] == config["text_config"]
    assert config["speech_generation"] == {"do_sample": False, "num_beams": 8, "max_new_tokens": 400}
    assert tuned_config["speech_generation"] == sampling


def test_stage3_starts_from_the_llm_trained_along_with_the_tokenizer(tiny_recipe, tmp_path):
    """With `understanding_llm/` beside `text_llm/`, the backbone is that LLM and each `<a_k>` row the tokenizer
    adapter's embedding of code k; `start_from_reader=False` (or no such folder) keeps `text_llm/` and mean rows."""
    import shutil

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dualspeechlm.training.train_dualspeechlm import build_model, load_parts

    ustokenizer_dir = tmp_path / "ust"
    shutil.copytree(tiny_recipe(tmp_path / "unused").ustokenizer, ustokenizer_dir)
    torch.manual_seed(1)
    reader = AutoModelForCausalLM.from_config(
        AutoModelForCausalLM.from_pretrained(ustokenizer_dir / "text_llm").config)
    reader.save_pretrained(ustokenizer_dir / "understanding_llm")
    AutoTokenizer.from_pretrained(ustokenizer_dir / "text_llm").save_pretrained(ustokenizer_dir / "understanding_llm")

    def backbone_and_speech_rows(**overrides):
        recipe = tiny_recipe(tmp_path / "model", ustokenizer=str(ustokenizer_dir), **overrides)
        ustokenizer, _, codec, _ = load_parts(recipe)
        model, _ = build_model(recipe, ustokenizer, codec)
        offset, count = model.config.speech_token_offset, model.config.num_speech_tokens
        return model, model.get_input_embeddings().weight[offset:offset + count], ustokenizer

    model, rows, ustokenizer = backbone_and_speech_rows()
    backbone = model.language_model
    layer = "model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(backbone.state_dict()[layer], reader.state_dict()[layer])
    torch.testing.assert_close(rows, ustokenizer.code_embeddings())
    # the output head is untied: its speech rows stay at the mean of the text rows, its text rows the reader's
    head, text_rows = backbone.get_output_embeddings().weight, reader.get_input_embeddings().weight
    assert not backbone.config.tie_word_embeddings
    assert head.data_ptr() != backbone.get_input_embeddings().weight.data_ptr()
    assert torch.equal(head[: len(text_rows)], text_rows)
    speech_head = head[-len(rows):]
    torch.testing.assert_close(speech_head, speech_head[:1].expand_as(speech_head))
    model.save_pretrained(tmp_path / "saved")
    loaded = type(model).from_pretrained(tmp_path / "saved").language_model
    assert torch.equal(loaded.get_output_embeddings().weight, head)
    assert not torch.equal(loaded.get_input_embeddings().weight, head)

    model, rows, _ = backbone_and_speech_rows(start_from_reader=False)
    backbone = model.language_model
    text_llm = AutoModelForCausalLM.from_pretrained(ustokenizer_dir / "text_llm")
    assert torch.equal(backbone.state_dict()[layer], text_llm.state_dict()[layer])
    torch.testing.assert_close(rows, rows[:1].expand_as(rows))  # every new row at the mean of the old ones


def test_codec_codes_keep_the_order_and_equal_one_by_one():
    from dualspeechlm.training.token_cache import codec_codes

    torch.manual_seed(0)
    codec = MelCodecModel(MelCodecConfig(hidden_size=16, latent_size=8, num_quantizers=2, codebook_size=16)).eval()
    waveforms = [0.1 * np.random.default_rng(n).standard_normal(n).astype(np.float32)
                 for n in (900, 4000, 320, 2500, 641)]
    codec.encode(torch.from_numpy(waveforms[1]))  # k-means init
    batched = codec.encode_each(waveforms, batch_size=2)  # batches of like length, longest first
    codes, frames = codec_codes(codec, waveforms)
    for waveform, each, item, count in zip(waveforms, batched, codes, frames):
        alone = codec.encode(torch.from_numpy(waveform))
        assert torch.equal(each, alone.codes[0]) and count == alone.lengths.item()
        assert np.array_equal(item, alone.codes[0].flatten().numpy())


def test_recipe_can_leave_acousticgpt_untrained(tiny_recipe, tmp_path, monkeypatch):
    from dualspeechlm.training import token_cache
    from dualspeechlm.training.train_dualspeechlm import build_model, cached_splits, load_parts, main

    recipe = tiny_recipe(tmp_path / "model", acoustic_loss_weight=0.0, speech_generation={"do_sample": False})
    parts = load_parts(recipe)
    config = build_model(recipe, parts[0], parts[2])[0].config
    assert (config.acoustic_loss_weight, config.speech_generation) == (0, {"do_sample": False})
    # its token cache holds no codes, which cost most of the cache's time; the speakers and USTokens are the same (and
    # the same whether the audio is decoded all at once or a row at a time)
    trained = cached_splits(dataclasses.replace(recipe, acoustic_loss_weight=1.0), "validation", parts)["speech"]
    monkeypatch.setattr(token_cache, "DECODED_ROWS", 1)
    spared = cached_splits(recipe, "validation", parts)["speech"]
    assert "audio_codes" in trained.column_names and set(spared.column_names) == set(trained.column_names) - {
        "audio_codes", "audio_frames"}
    assert spared["audio_ustokens"] == trained["audio_ustokens"]
    # speaker embeddings of a padded batch differ from one-by-one ones only in float rounding
    np.testing.assert_allclose(spared["audio_speaker"], trained["audio_speaker"], atol=1e-4)
    # another tokenizer's tokens get a folder of their own: switching back reads the first tokenizer's again
    other = copy.deepcopy(parts[0])
    with torch.no_grad():
        for name, weight in other.named_parameters():
            if not name.startswith("encoder."):  # the frozen Whisper encoder (and its cache) stays the same
                weight.add_(0.5)
    cached_splits(recipe, "validation", (other, *parts[1:]))
    assert len(list((Path(recipe.cache_dir) / "tokens").iterdir())) == 2
    monkeypatch.setattr(token_cache, "ustokens", lambda *a, **k: pytest.fail("the first tokenizer's cache was lost"))
    assert cached_splits(recipe, "validation", parts)["speech"]["audio_ustokens"] == spared["audio_ustokens"]
    with pytest.raises(SystemExit):  # the flag exists (and --print-config exits after printing the recipe)
        main(["--acoustic-loss-weight", "0", "--print-config"])


def test_recipe_model_config_sets_other_config_fields_and_refuses_unknown_or_doubled_ones():
    from dualspeechlm.training.train_dualspeechlm import training_settings

    recipe = DualSpeechLMRecipe.tiny(model_config={"coc_modes": ["both"], "semantic_supervision": False})
    settings = training_settings(recipe)
    assert settings == {"coc_modes": ["both"], "semantic_supervision": False,
                        **training_settings(DualSpeechLMRecipe.tiny())}
    config = DualSpeechLMConfig.tiny(**settings)
    assert (config.coc_modes, config.semantic_supervision) == (("both",), False)
    with pytest.raises(ValueError, match=r"\['no_such_field'\] are not DualSpeechLMConfig fields"):
        training_settings(DualSpeechLMRecipe.tiny(model_config={"no_such_field": 1}))
    with pytest.raises(ValueError, match=r"set \['acoustic_loss_weight'\] through their own recipe fields"):
        training_settings(DualSpeechLMRecipe.tiny(model_config={"acoustic_loss_weight": 0.0}))


def test_recipe_trains_on_a_subset_of_the_tasks_under_the_presets_weights(tiny_recipe, tmp_path):
    recipe = tiny_recipe(tmp_path / "model", acoustic_loss_weight=0.0, tasks=("tts", "asr"), steps=4)
    assert set(recipe.task_weights) > set(recipe.tasks)  # the preset weighs all eight tasks: the others are unused
    folder = train_dualspeechlm(recipe)
    logged = [entry for entry in json.loads((folder / "training_log.json").read_text()) if "llm_loss" in entry]
    assert [entry["step"] for entry in logged] == [1, 2, 3, 4] and all(np.isfinite(e["llm_loss"]) for e in logged)


KILL_AT_SAVE = """
import json, os, signal, sys
from transformers import TrainerCallback
from dualspeechlm.training import train_dualspeechlm as stage3

class KillAfterSave(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        if state.global_step == int(sys.argv[2]):
            os.kill(os.getpid(), signal.SIGKILL)  # as an out-of-memory kill or a pre-empted node would

class Killed(stage3.BatchSamplerTrainer):
    def __init__(self, *args, callbacks=None, **kwargs):
        super().__init__(*args, callbacks=[*(callbacks or []), KillAfterSave()], **kwargs)

stage3.BatchSamplerTrainer = Killed
settings = json.loads(sys.argv[1])
stage3.train_dualspeechlm(stage3.DualSpeechLMRecipe(**settings))
"""


def test_resume_after_a_kill_reaches_the_uninterrupted_state(tiny_recipe, tmp_path, monkeypatch):
    """Killed (SIGKILL) right after its step-2 checkpoint, the rerun resumes there and ends with the
    same weights as a run that was never interrupted: optimizer, scheduler, RNG and the task
    sampler's position all come back."""
    import dataclasses
    import os
    import subprocess
    import sys

    from transformers import TrainerCallback

    from dualspeechlm.training import train_dualspeechlm as stage3

    uninterrupted = train_dualspeechlm(tiny_recipe(tmp_path / "uninterrupted", steps=4, save_steps=2))
    recipe = tiny_recipe(tmp_path / "killed", steps=4, save_steps=2)
    settings = json.dumps({**dataclasses.asdict(recipe), "tasks": list(recipe.tasks)})
    killed = subprocess.run([sys.executable, "-c", KILL_AT_SAVE, settings, "2"], capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert (tmp_path / "killed" / "checkpoints" / "checkpoint-2").is_dir()
    assert not (tmp_path / "killed" / "model.safetensors").exists()

    steps_run = []

    class CountSteps(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            steps_run.append(state.global_step)

    class Counted(stage3.BatchSamplerTrainer):
        def __init__(self, *args, callbacks=None, **kwargs):
            super().__init__(*args, callbacks=[*(callbacks or []), CountSteps()], **kwargs)

    monkeypatch.setattr(stage3, "BatchSamplerTrainer", Counted)
    resumed = train_dualspeechlm(recipe)
    assert steps_run == [3, 4], "the rerun did not resume from the step-2 checkpoint"
    logs = [[(e["step"], e["loss"]) for e in json.loads((run / "training_log.json").read_text()) if "loss" in e]
            for run in (uninterrupted, resumed)]
    assert logs[0] == logs[1]
    expected, got = (load_file(path / "model.safetensors") for path in (uninterrupted, resumed))
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=1e-6, msg=name)


def test_fine_tuning_onto_a_new_codec_gives_a_fresh_acousticgpt_for_its_codes(tiny_recipe, tmp_path):
    folder = train_dualspeechlm(tiny_recipe(tmp_path / "model", acoustic_loss_weight=0.0, steps=2))
    torch.manual_seed(1)
    other = MelCodecModel(MelCodecConfig(hidden_size=16, latent_size=8, num_quantizers=1, codebook_size=24,
                                         vocoder="griffin_lim", griffin_lim_iterations=2)).eval()
    other.encode(0.1 * torch.randn(2, 16000))  # its k-means initialisation, before it is saved
    other.save_pretrained(tmp_path / "other_codec")
    recipe = tiny_recipe(tmp_path / "tuned", init_from=str(folder), new_codec=str(tmp_path / "other_codec"), steps=3)
    tuned = train_dualspeechlm(recipe)

    model = DualSpeechLMForConditionalGeneration.from_pretrained(tuned)
    assert (model.config.num_codebooks, model.config.codebook_size) == (1, 24)
    assert model.config.acoustic_loss_weight == 1.0
    logged = [entry for entry in json.loads((tuned / "training_log.json").read_text()) if "acoustic_loss" in entry]
    assert logged and all(np.isfinite(entry["acoustic_loss"]) for entry in logged)
    before, after = (load_file(path / "model.safetensors") for path in (folder, tuned))
    kept = [name for name in before if name.startswith("language_model.")]
    assert kept and set(kept) <= set(after)  # the LLM goes on from where it was
    assert after["acoustic_gpt.embed_codes.weight"].shape != before["acoustic_gpt.embed_codes.weight"].shape
    # the saved model speaks through the new codec, whose codes its AcousticGPT writes
    assert (model.codec_model.num_codebooks, model.codec_model.codebook_size) == (1, 24)
    assert all(torch.equal(value, after[f"codec_model.{name}"]) for name, value in other.state_dict().items())
    with pytest.raises(ValueError, match="needs init_from"):
        train_dualspeechlm(tiny_recipe(tmp_path / "refused", new_codec=str(tmp_path / "other_codec")))


def test_samples_page_of_a_trained_folder_plays_in_chromium(tiny_recipe, tiny_corpus, whisper_dir, tmp_path):
    """`dualspeechlm-samples` on a model trained a few steps: every task's files, both pages, and in Debian's
    Chromium every `<audio>` player loads its file and every picture shows."""
    from dualspeechlm.training.samples import main as samples_main

    recipe = tiny_recipe(tmp_path / "model")
    folder = train_dualspeechlm(recipe)
    out = tmp_path / "samples"
    samples_main(["--model", str(folder), "--output-dir", str(out), "--corpus", str(tiny_corpus), "--cache-dir",
                  recipe.cache_dir, "--whisper", str(whisper_dir), "--per-split", "1"])
    samples = json.loads((out / "samples.json").read_text())
    assert list(samples["splits"]) == ["test", "test_unseen_voice"]
    for split, tasks in samples["splits"].items():
        assert set(tasks) == {"asr", "s2tt", "ser", "sqa", "tts", "vc", "t2st", "sc"}
        for task, (item,) in tasks.items():
            assert all((out / name).is_file() for name in item["files"].values()), (split, task)
            if task in ("asr", "s2tt", "ser", "sqa"):
                assert set(item["files"]) == {"input"} and isinstance(item["answer"], str) and item["reference"]
            else:
                assert {"reference", "log_mel"} <= set(item["files"]) and item["voice"]
                assert item["sim"] is None or "generated" in item["files"]  # no SIM where no speech was written
            if task in ("tts", "vc", "sc"):
                assert set(item["transcripts"]) == {"whisper", "pocketsphinx"}
        assert set(tasks["sc"][0]["files"]) >= {"input", "question", "reference"}
    readme = (out / "README.md").read_text()
    assert "np.str_" not in readme and "voices heard in training" in readme
    linked = markdown_links(out / "README.md")
    assert linked and all((out / name).is_file() for name in linked)
    assert sum(name.endswith(".png") for name in linked) == 8  # a picture per generation item
    assert sum(path.stat().st_size for path in out.iterdir()) < 5e6
    assert check_samples_page(out)[1] == 8
