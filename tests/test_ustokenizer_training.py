"""Stage 1: the encoder cache, the understanding objective, and the recipe end to end on a tiny corpus."""

import json
from types import SimpleNamespace

import datasets
import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import (
    AutoFeatureExtractor,
    AutoModel,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    TrainingArguments,
)

from dualspeechlm.configuration_ustokenizer import USTokenizerConfig
from dualspeechlm.feature_extraction_ustokenizer import USTokenizerFeatureExtractor
from dualspeechlm.modeling_ustokenizer import RealLengthWhisperEncoder, USTokenizerModel
from dualspeechlm.processing.corpus import corpus_audio
from dualspeechlm.processing.text_tokenizer import train_text_tokenizer
from dualspeechlm.training import encoder_cache, evaluate_ustokenizer
from dualspeechlm.training import train_ustokenizer as stage1
from dualspeechlm.training.evaluate_ustokenizer import (
    codebook_usage,
    evaluate_split,
    markdown_report,
    reading_llm_folder,
)
from dualspeechlm.training.plots import plot_losses
from dualspeechlm.training.text_llm import small_llm_config, train_text_llm
from dualspeechlm.training.train_ustokenizer import USTokenizerRecipe, train_ustokenizer
from dualspeechlm.training.trainer import LossTermsTrainer
from dualspeechlm.training.understanding import (
    IGNORE_INDEX,
    UnderstandingCollator,
    USTokenizerForUnderstanding,
    character_ids,
)

pytestmark = pytest.mark.usefixtures("one_thread")

D_MODEL, LLM_WIDTH, VOCAB, PAD = 32, 24, 40, 0


def tiny_understanding(seed: int = 0) -> USTokenizerForUnderstanding:
    """A frozen random LLM with large weights (initializer_range 0.5): with the usual 0.02 its logits
    are nearly uniform whatever the input, so no adapter could lower its loss (a trained LLM is sharp)."""
    torch.manual_seed(seed)
    encoder = dict(d_model=D_MODEL, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=64,
                   decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64)
    tokenizer = USTokenizerModel(USTokenizerConfig(encoder_config=encoder, conv_hidden_size=32, codebook_dim=16,
                                                   codebook_size=32, llm_hidden_size=LLM_WIDTH))
    llm = LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=LLM_WIDTH, intermediate_size=48,
                                       num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                       pad_token_id=PAD, bos_token_id=1, eos_token_id=2, initializer_range=0.5))
    return USTokenizerForUnderstanding(tokenizer, llm)


def cached_rows(lengths=(10, 7, 13), seed=0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"encoder_hidden_states": rng.standard_normal(n * D_MODEL).astype(np.float16), "num_frames": n,
             "before_ids": [1, 5, 6], "after_ids": list(range(7, 7 + i + 1)), "answer_ids": [10 + i, 11, 2]}
            for i, n in enumerate(lengths)]


def test_collator_pads_and_keeps_lengths():
    rows = cached_rows()
    batch = UnderstandingCollator(PAD)(rows)
    assert batch["encoder_hidden_states"].shape == (3, 13, D_MODEL)
    assert batch["encoder_lengths"].tolist() == [10, 7, 13]
    assert np.array_equal(batch["encoder_hidden_states"][1, :7].half().flatten().numpy(),
                          rows[1]["encoder_hidden_states"])
    assert batch["encoder_hidden_states"][1, 7:].abs().sum() == 0
    assert batch["after_lengths"].tolist() == [1, 2, 3] and batch["after_ids"][0].tolist() == [7, PAD, PAD]


def test_sequences_mask_everything_but_the_answer_and_left_pad_for_generation():
    model = tiny_understanding()
    batch = UnderstandingCollator(PAD)(cached_rows())
    out = model.ustokenizer(encoder_hidden_states=batch["encoder_hidden_states"],
                            encoder_lengths=batch["encoder_lengths"])
    parts = {k: v for k, v in batch.items() if k.split("_")[0] in ("before", "after", "answer")}
    embeds, mask, labels = model.sequences(out.adapter_embeddings, out.token_lengths, **parts)
    tokens = out.token_lengths.tolist()  # ceil(ceil(frames/1)/2): the cached frames are already 50 Hz
    assert tokens == [5, 4, 7]
    for i in range(3):
        prompt = 3 + tokens[i] + (i + 1)
        assert mask[i].sum() == prompt + 3
        assert (labels[i, :prompt] == IGNORE_INDEX).all()
        assert labels[i, prompt : prompt + 3].tolist() == [10 + i, 11, 2]
    assert torch.allclose(embeds[1, 3 : 3 + 4], out.adapter_embeddings[1, :4])
    no_answer = {k: v for k, v in parts.items() if not k.startswith("answer")}
    left, left_mask, none = model.sequences(out.adapter_embeddings, out.token_lengths, **no_answer, left_padding=True)
    assert none is None and left_mask[:, -1].all()  # every prompt ends in the last column
    shortest = int(left_mask[1].sum())
    assert torch.allclose(left[1, -shortest:], embeds[1, :shortest])


def test_training_lowers_the_understanding_loss_and_leaves_the_llm_frozen():
    model = tiny_understanding()
    llm_before = {k: v.clone() for k, v in model.llm.state_dict().items()}
    batch = UnderstandingCollator(PAD)(cached_rows())
    trainable = [p for p in model.parameters() if p.requires_grad]
    # lr 1e-3, not 1e-2: at 1e-2 this frozen, sharp LLM makes the loss jump around, and where it ends after 60
    # steps varied with the CPU's float rounding (one machine passed, another ended at 0.8x the first loss)
    optimizer = torch.optim.Adam(trainable, lr=1e-3)
    model.train()
    losses = []
    for _ in range(60):
        out = model(**batch)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.understanding_loss.item())
    assert not model.llm.training and all(p.grad is None for p in model.llm.parameters())
    assert all(torch.equal(v, model.llm.state_dict()[k]) for k, v in llm_before.items())
    assert np.mean(losses[-5:]) < 0.6 * losses[0], losses[::10]
    answers = model.eval().answer(**{k: v for k, v in batch.items() if not k.startswith("answer")}, max_new_tokens=3)
    assert answers.shape[0] == 3


def test_without_the_understanding_loss_only_the_codebook_is_trained_and_scored():
    model = tiny_understanding()
    model.ustokenizer.config.understanding_weight = 0.0
    batch = UnderstandingCollator(PAD)(cached_rows())
    out = model.train()(**batch)
    out.loss.backward()
    untrained = [*model.ustokenizer.adapter_linear.parameters(), *model.llm.parameters()]
    assert out.understanding_loss == 0 and all(p.grad is None for p in untrained)
    rows = [{**row, "task": task, "answer": "a b"} for row, task in zip(cached_rows(), ("asr", "asr", "ser"))]
    report = evaluate_split(model, datasets.Dataset.from_list(rows), SimpleNamespace(pad_token_id=PAD))
    assert report["asr_examples"] == 2 and report["codes_used"] > 0
    assert not {"asr_wer", "ser_accuracy", "samples"} & set(report)  # an untrained adapter's answers mean nothing
    table = markdown_report({"splits": {"test": report}})
    assert f"| test | - | - | - | - | - | {report['codes_used']} / 32 |" in table


def test_transcript_ctc_trains_the_tokens_to_spell_the_words(tmp_path):
    base = tiny_understanding()
    base.ustokenizer.config.transcript_ctc_weight = 1.0
    with pytest.raises(ValueError, match="alphabet"):
        USTokenizerForUnderstanding(base.ustokenizer, base.llm)
    model = USTokenizerForUnderstanding(base.ustokenizer, base.llm, alphabet="abc ")
    assert character_ids("a cab!", model.alphabet) == [1, 4, 3, 1, 2]  # 0 is the blank; "!" is not in the alphabet
    rows = cached_rows()
    batch = UnderstandingCollator(PAD)(rows)
    with pytest.raises(ValueError, match="transcript_ids"):
        model(**batch)
    for row, text in zip(rows, ("ab", "cab", "a bc")):
        row["transcript_ids"] = character_ids(text, model.alphabet)
    batch = UnderstandingCollator(PAD)(rows)
    assert batch["transcript_lengths"].tolist() == [2, 3, 4]
    # the CTC alone: the understanding loss through the tiny random LLM makes the trajectory depend on rounding
    config = model.ustokenizer.config
    understanding_weight, config.understanding_weight = config.understanding_weight, 0.0
    torch.manual_seed(0)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(40):
        out = model.train()(**batch)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.transcript_ctc_loss.item())
    assert np.mean(losses[-5:]) < 0.5 * losses[0], losses[::10]
    assert model.transcript_head[0].weight.grad is not None and model.ustokenizer.projection.weight.grad is not None

    for _ in range(80):  # until the three rows are learnt by heart: then the head spells them from the codes
        out = model.train()(**batch)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    assert model.eval().spell(**batch) == ["ab", "cab", "a bc"]
    # saved beside the tokenizer, the head spells the same after loading; without it the CTC is off
    model.ustokenizer.save_pretrained(tmp_path)
    model.save_transcript_head(tmp_path)
    loaded = USTokenizerForUnderstanding.from_pretrained(tmp_path, model.llm)
    assert loaded.alphabet == "abc " and loaded.eval().spell(**batch) == ["ab", "cab", "a bc"]
    (tmp_path / "transcript_head.safetensors").unlink()
    assert (USTokenizerForUnderstanding.from_pretrained(tmp_path, model.llm).ustokenizer.config.transcript_ctc_weight
            == 0)
    config.understanding_weight = understanding_weight  # the report's LLM column again
    rows = [{**row, "task": "asr", "answer": text} for row, text in zip(rows, ("ab", "cab", "a b c"))]
    report = evaluate_split(model, datasets.Dataset.from_list(rows).with_format("numpy"), SimpleNamespace(
        pad_token_id=PAD, batch_decode=lambda ids, **_: ["x"] * len(ids)))
    assert report["asr_ctc_wer"] == pytest.approx(2 / 5)  # "a bc" against "a b c": one substitution, one deletion
    assert "| test | 100.0% | 40.0% |" in markdown_report({"splits": {"test": report}})


def test_width_mismatch_is_a_clear_error():
    model = tiny_understanding()
    with pytest.raises(ValueError, match="llm_hidden_size"):
        USTokenizerForUnderstanding(model.ustokenizer, LlamaForCausalLM(LlamaConfig(
            vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)))


def test_codebook_usage_on_known_codes():
    usage = codebook_usage(np.array([0, 0, 1, 3]), codebook_size=8)
    assert usage["codes_used"] == 3 and usage["usage"] == 3 / 8
    assert usage["perplexity"] == pytest.approx(np.exp(-(0.5 * np.log(0.5) + 2 * 0.25 * np.log(0.25))))
    assert codebook_usage(np.arange(8), 8)["perplexity"] == pytest.approx(8)


def four_logged_steps(tmp_path) -> TrainingArguments:
    """Four steps of 3 rows on the CPU, logged every 2, nothing saved."""
    return TrainingArguments(output_dir=str(tmp_path / "run"), max_steps=4, per_device_train_batch_size=3,
                             logging_steps=2, report_to=[], save_strategy="no", remove_unused_columns=False,
                             label_names=[], use_cpu=True, disable_tqdm=True)


def test_loss_terms_are_logged_and_plotted(tmp_path):
    model = tiny_understanding()
    rows = cached_rows() * 4
    args = four_logged_steps(tmp_path)
    trainer = LossTermsTrainer(model=model, args=args, train_dataset=rows, data_collator=UnderstandingCollator(PAD))
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logged) == 2
    for entry in logged:
        assert {"commitment_loss", "reconstruction_loss", "understanding_loss"} <= set(entry)
    png = plot_losses(trainer.state.log_history, tmp_path / "loss.png", ("loss", "understanding_loss", "never"))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_losses(trainer.state.log_history, tmp_path / "none.png", ("never",))


def test_encoder_cache_matches_the_encoder_and_is_reused(tiny_corpus, whisper_dir, tmp_path, monkeypatch):
    encoder = RealLengthWhisperEncoder.from_whisper(whisper_dir).eval()
    extractor = USTokenizerFeatureExtractor()
    cached = encoder_cache.cached_encoder_outputs(tiny_corpus, "speech", "test", encoder, extractor, tmp_path)
    audio = corpus_audio(tiny_corpus, "test")["audio"]
    assert "audio" not in cached.column_names and len(cached) == len(audio)
    features = extractor(audio[:1], sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        direct = encoder(features.input_features).last_hidden_state[0]
    row = cached.with_format("numpy")[0]
    stored = torch.from_numpy(np.asarray(row["encoder_hidden_states"]).astype(np.float32)).view(row["num_frames"], -1)
    assert stored.shape == direct.shape
    assert torch.allclose(stored, direct, atol=2e-2 * direct.abs().max().item())  # float16 storage

    monkeypatch.setattr(encoder_cache, "encode_batch", lambda *a, **k: pytest.fail("the cache was recomputed"))
    again = encoder_cache.cached_encoder_outputs(tiny_corpus, "speech", "test", encoder, extractor, tmp_path)
    assert again["num_frames"] == cached["num_frames"]


def test_cache_folders_land_whole_and_a_copy_renamed_in_meanwhile_wins(tmp_path, monkeypatch):
    path = tmp_path / "speech-test"
    encoder_cache.write_cache(path, datasets.Dataset.from_dict({"x": [1, 2]}), {"version": 1})
    assert encoder_cache.read_cache(path, {"version": 1})["x"] == [1, 2]
    encoder_cache.write_cache(path, datasets.Dataset.from_dict({"x": [3]}), {"version": 2})  # other inputs: replaced
    assert encoder_cache.read_cache(path, {"version": 1}) is None
    assert encoder_cache.read_cache(path, {"version": 2})["x"] == [3]

    save = datasets.Dataset.save_to_disk

    def another_process_finishes_first(dataset, target, **kwargs):
        save(datasets.Dataset.from_dict({"x": [9]}), str(path))
        (path / encoder_cache.CACHE_INFO).write_text(json.dumps({"version": 3}))
        save(dataset, target, **kwargs)

    monkeypatch.setattr(datasets.Dataset, "save_to_disk", another_process_finishes_first)
    assert encoder_cache.write_cache(path, datasets.Dataset.from_dict({"x": [4]}), {"version": 3})["x"] == [9]
    assert [item.name for item in tmp_path.iterdir()] == ["speech-test"]  # no half-written copy left beside it


def test_encode_sorted_keeps_the_order_and_the_values_of_one_item_alone(whisper_dir):
    encoder = RealLengthWhisperEncoder.from_whisper(whisper_dir).eval()
    extractor = USTokenizerFeatureExtractor()
    rng = np.random.default_rng(0)
    waveforms = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (8000, 2400, 16000, 4000, 11200)]
    states = encoder_cache.encode_sorted(encoder, extractor, waveforms, batch_size=2)
    for waveform, state in zip(waveforms, states):
        alone = encoder_cache.encode_batch(encoder, extractor, [waveform])[0]
        assert state.shape == alone.shape  # every length differs: a wrong order shows here
        np.testing.assert_allclose(state.astype(np.float32), alone.astype(np.float32), atol=1e-2)


def test_text_llm_is_the_same_whatever_the_random_state_before(tmp_path):
    documents = ["the cat sat on the mat", "a dog ran in the park", "please find the red ball"] * 6
    tokenizer = train_text_tokenizer(documents, 300)
    config = small_llm_config(tokenizer, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                              num_attention_heads=2, num_key_value_heads=2)
    weights = []
    for run in range(2):
        torch.manual_seed(100 + run)  # its own process in the main job, after stage 1's seeding inline before
        model = train_text_llm(documents, tokenizer, config, tmp_path / str(run), steps=2, batch_size=4, seed=0)
        weights.append(model.state_dict())
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])


def test_recipe_end_to_end_on_the_tiny_corpus(tiny_corpus, whisper_dir, tmp_path, monkeypatch):
    out, cache = tmp_path / "ust", tmp_path / "cache"
    llm_fields = dict(text_vocab_size=1000, llm_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1),
                      llm_steps=4)
    recipe = USTokenizerRecipe.tiny(corpus=str(tiny_corpus), whisper=str(whisper_dir), output_dir=str(out),
                                    cache_dir=str(cache), **llm_fields,
                                    tokenizer_config=dict(conv_hidden_size=32, codebook_dim=16, codebook_size=64),
                                    steps=4, batch_size=4, logging_steps=2, warmup_steps=1, eval_limit=2,
                                    whisper_baseline=False)
    # as the main job runs it: the text LLM and the encoder cache of stage 1's audio first (side by side there),
    # then stage 1, which trains no text LLM and encodes no audio again
    (tmp_path / "llm.yaml").write_text(yaml.safe_dump(llm_fields))
    stage1.main(["--corpus", str(tiny_corpus), "--output-dir", str(out), "--config", str(tmp_path / "llm.yaml"),
                 "--text-llm-only"])
    assert (out / "text_llm" / "config.json").is_file() and not (out / "config.json").exists()
    encoder_cache.main(["--corpus", str(tiny_corpus), "--whisper", str(whisper_dir), "--cache-dir", str(cache),
                        "--configs", "speech", "style", "qa", "--columns", "audio"])
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        f"{config}-{split}" for config in ("speech", "style", "qa")
        for split in ("train", "validation", "test", "test_unseen_voice"))
    monkeypatch.setattr(stage1, "train_text_llm", lambda *a, **k: pytest.fail("the text LLM was trained again"))
    monkeypatch.setattr(encoder_cache, "encode_batch", lambda *a, **k: pytest.fail("cached audio was encoded again"))
    results = train_ustokenizer(recipe)
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "evaluation.json", "evaluation.md",
                 "loss.png", "transcript_head.safetensors", "text_llm/config.json", "text_llm/tokenizer.json",
                 "understanding_llm/model.safetensors", "understanding_llm/tokenizer.json"):
        assert (out / name).is_file(), name
    # the tiny preset trains the LLM along with the tokenizer and keeps it for stage 3
    pretrained, trained = (load_file(out / folder / "model.safetensors")
                           for folder in ("text_llm", "understanding_llm"))
    assert pretrained.keys() == trained.keys() and any(not torch.equal(pretrained[k], trained[k]) for k in pretrained)
    for split in ("test", "test_unseen_voice"):
        report = results["splits"][split]
        assert 0 <= report["asr_wer"] and 0 < report["codes_used"] <= 64 and report["asr_examples"] == 2
        assert {"ser_accuracy", "sqa_accuracy", "asr_ctc_wer"} <= set(report)  # the tiny preset's transcript CTC
    assert (json.loads((out / "evaluation.json").read_text())["splits"]["test"]["asr_wer"]
            == results["splits"]["test"]["asr_wer"])

    # the saved folder scores the same again, through the LLM trained along with it
    evaluate_ustokenizer.main(["--model", str(out), "--corpus", str(tiny_corpus), "--cache-dir", str(cache),
                               "--limit", "2", "--no-whisper-baseline", "--output-dir", str(tmp_path / "again")])
    again = json.loads((tmp_path / "again" / "evaluation.json").read_text())
    assert again["llm"] == str(out / "understanding_llm")
    for split in ("test", "test_unseen_voice"):
        for key in ("asr_wer", "asr_ctc_wer", "ser_accuracy", "sqa_accuracy", "codes_used"):
            assert again["splits"][split][key] == results["splits"][split][key], (split, key)
    with pytest.raises(FileNotFoundError, match="--llm"):
        reading_llm_folder(tmp_path / "again")

    # the text tokenizer also learnt the stage-3 tasks' text: Spanish / French answers and every instruction
    from dualspeechlm.processing.corpus import load_corpus

    text_tokenizer = AutoTokenizer.from_pretrained(out / "text_llm")
    translations = list(load_corpus(tiny_corpus, "translation")["train"]["translation"])
    pieces = sum(len(text_tokenizer.tokenize(" " + t)) for t in translations)
    words = sum(len(t.split()) for t in translations)
    assert pieces < 1.5 * words, "the translations are split into bytes: the tokenizer never saw them"

    model = AutoModel.from_pretrained(out).eval()
    extractor = AutoFeatureExtractor.from_pretrained(out)
    audio = corpus_audio(tiny_corpus, "test", limit=2)["audio"]
    ids = model.encode(**extractor(audio, sampling_rate=16000, return_tensors="pt"))
    assert [abs(n - 25 * len(a) / 16000) <= 1 for n, a in zip(ids.lengths.tolist(), audio)] == [True, True]
    assert (ids.ids[0, : ids.lengths[0]] >= 0).all()

