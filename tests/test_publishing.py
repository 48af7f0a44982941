"""dualspeechlm-push: the model card from the evaluation JSON, the staged repo folders, and a round
trip through the loopback Hub: push, then load the model and the corpus and fine-tune from both in
a fresh process."""

import hashlib
import json
import math
import shutil
import subprocess
import sys

import pytest
import torch
from huggingface_hub import ModelCard, RepoCard

from dualspeechlm.pipelines_dualspeechlm import save_for_pipelines
from dualspeechlm.processing.corpus import load_corpus
from dualspeechlm.publishing.model_card import render_model_card
from dualspeechlm.publishing.push import PublishError, publish
from dualspeechlm.testing_utils import tiny_random_model_and_processor

from test_space_examples import samples_page

pytestmark = pytest.mark.usefixtures("one_thread")

EVALUATION = {"splits": {
    "test": {"asr": {"examples": 4, "wer": 0.25, "whisper_wer_same_audio": 0.5},
             "tts": {"examples": 2, "sim": 0.7, "whisper_wer_generated": 0.4, "whisper_wer_reference": 0.3,
                     "seconds_generated": 3.0},
             "tts_resynthesis": {"examples": 2, "whisper_wer_generated": 0.35}},
    "test_unseen_voice": {"asr": {"examples": 4, "wer": 0.375, "whisper_wer_same_audio": 0.625},
                          "vc": {"examples": 2, "sim": float("nan"), "no_speech": 1.0}},
}}
TRAINING_LOG = [{"loss": 5.0, "llm_loss": 3.0, "acoustic_loss": 2.0, "step": 1},
                {"train_runtime": 120.0, "step": 2}]


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    """A tiny random model saved as stage 3 saves it, with an evaluation, a log and a checkpoint."""
    model, processor = tiny_random_model_and_processor()
    folder = tmp_path_factory.mktemp("trained") / "model"
    save_for_pipelines(model, processor, folder)
    (folder / "evaluation.json").write_text(json.dumps(EVALUATION))
    (folder / "training_log.json").write_text(json.dumps(TRAINING_LOG))
    (folder / "checkpoints" / "checkpoint-2").mkdir(parents=True)
    (folder / "checkpoints" / "checkpoint-2" / "optimizer.pt").write_bytes(b"training state")
    return folder


def tree_digest(folder) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return digest.hexdigest()


def test_model_card_takes_every_number_from_the_evaluation(model_folder):
    card = render_model_card(model_folder, "me/tiny", "me/tiny-corpus")
    reloaded = ModelCard(str(card))  # the README parses back, model-index included
    results = {(r.dataset_split, r.task_type, r.metric_name): r.metric_value for r in reloaded.data.eval_results}
    assert results[("test", "automatic-speech-recognition", "WER")] == 0.25
    assert results[("test_unseen_voice", "automatic-speech-recognition", "WER")] == 0.375
    assert results[("test", "text-to-speech", "Whisper tiny.en WER on generated speech")] == 0.4
    assert results[("test_unseen_voice", "audio-to-audio", "share of outputs without speech")] == 1.0
    assert len(results) == 8  # every finite metric; NaN SIM, bookkeeping and the resynthesis diagnostic left out
    assert all(math.isfinite(v) for v in results.values())
    assert {r.dataset_type for r in reloaded.data.eval_results} == {"me/tiny-corpus"}
    assert reloaded.data.datasets == ["me/tiny-corpus"] and reloaded.data.license == "apache-2.0"
    text = str(card)
    assert "| ASR | WER | 0.250 | 0.375 |" in text
    assert "| TTS_RESYNTHESIS | Whisper tiny.en WER on generated speech | 0.350 |" in text  # in the table only
    assert "for 2 steps in 2 min" in text and "llm_loss 3.000" in text
    assert 'pipeline("automatic-speech-recognition", model="me/tiny", trust_remote_code=True)' in text
    assert "ASR WER on unseen test sentences is 25.0%" in text and "2508.08961" in text


def test_output_dir_holds_the_exact_repo_folders(model_folder, tiny_corpus, tmp_path):
    before = tree_digest(model_folder)
    staged = publish(model_folder, "me/tiny", tiny_corpus, "me/tiny-corpus", "me/tiny-demo",
                     output_dir=tmp_path / "out", samples_dir=samples_page(tmp_path / "samples"))
    assert [(r.repo_id, r.repo_type) for r in staged] == [
        ("me/tiny", "model"), ("me/tiny-corpus", "dataset"), ("me/tiny-demo", "space")]
    model, dataset, space = (tmp_path / "out" / name for name in ("model", "dataset", "space"))
    assert not (model / "checkpoints").exists() and (model / "model.safetensors").is_file()
    card = ModelCard.load(model / "README.md")
    assert card.data.eval_results
    # pictures of the results and of the losses, and what the model knows, from the corpus manifest
    assert "![per-task results](evaluation.png)" in card.text and (model / "evaluation.png").stat().st_size > 1000
    manifest = json.loads((tiny_corpus / "manifest.json").read_text())
    assert f"a small grammar of {manifest['vocabulary_size']} words" in card.text
    assert 'load_dataset("me/tiny-corpus", "speech")' in (dataset / "README.md").read_text()
    assert sorted(p.name for p in (dataset / "speech").iterdir()) == sorted(
        p.name for p in (tiny_corpus / "speech").iterdir())
    space_card = RepoCard.load(space / "README.md")
    assert space_card.data.sdk == "gradio" and space_card.data.app_file == "app.py"
    assert space_card.data.models == ["me/tiny"] and space_card.data.datasets == ["me/tiny-corpus"]
    assert (space / "model_id.txt").read_text().strip() == "me/tiny"
    assert {"app.py", "requirements.txt"} <= {p.name for p in space.iterdir()} and not (space / "__init__.py").exists()
    examples = json.loads((space / "examples" / "examples.json").read_text())  # from the corpus' test split
    assert set(examples["examples"]) == {"asr", "tts", "vc", "qa", "translate"}
    clips = [value for rows in examples["examples"].values() for row in rows for value in row
             if value.endswith(".wav")]
    assert clips and all((space / "examples" / clip).is_file() for clip in clips)
    assert examples["training"]["vocabulary_size"] > 0 and examples["training"]["sentences"]
    heard = [item[role] for items in examples["heard"].values() for item in items for role in item
             if role != "caption"]
    assert set(examples["heard"]) == {"tts", "vc"} and all((space / "examples" / name).is_file() for name in heard)
    assert tree_digest(model_folder) == before


FROM_THE_HUB = """
import json, sys, torch
from datasets import load_dataset
from transformers import AutoModel
repo, dataset_repo, out = sys.argv[1:4]
model = AutoModel.from_pretrained(repo, trust_remote_code=True).eval()
ids = torch.arange(3, 40).view(1, -1)
with torch.no_grad():
    logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
torch.save({"logits": logits, "module": type(model).__module__}, out + ".pt")
rows = load_dataset(dataset_repo, "speech", split="test")
json.dump({"id": list(rows["id"]), "text": list(rows["text"]), "seconds": [len(a.get_all_samples().data[0]) / 16000
           for a in rows["audio"]]}, open(out, "w"))
"""


def test_push_then_load_and_fine_tune_from_the_hub_in_a_fresh_process(model_folder, tiny_corpus, hub_server, hub_api,
                                                                      tmp_path):
    urls = publish(model_folder, "me/tiny", tiny_corpus, "me/tiny-corpus", "me/tiny-demo",
                   token=hub_server.token, endpoint=hub_server.endpoint)
    assert len(urls) == 3
    assert "checkpoints/checkpoint-2/optimizer.pt" not in hub_api.list_repo_files("me/tiny")
    assert "app.py" in hub_api.list_repo_files("me/tiny-demo", repo_type="space")
    env = {**hub_server.env(tmp_path / "client"), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "out.json"
    loaded = subprocess.run([sys.executable, "-c", FROM_THE_HUB, "me/tiny", "me/tiny-corpus", str(out)],
                            env=env, capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0, loaded.stderr[-3000:]

    remote = torch.load(str(out) + ".pt")
    assert remote["module"].startswith("transformers_modules.")  # the repo's own code
    model, _ = tiny_random_model_and_processor()
    ids = torch.arange(3, 40).view(1, -1)
    with torch.no_grad():
        expected = model.eval()(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    torch.testing.assert_close(remote["logits"], expected)
    rows = json.loads(out.read_text())
    local = load_corpus(tiny_corpus, "speech")["test"]
    assert rows["id"] == list(local["id"]) and rows["text"] == list(local["text"])
    assert rows["seconds"] == pytest.approx(list(local["duration"]), abs=0.02)

    tuned = tmp_path / "tuned"
    fine_tune = subprocess.run(
        [sys.executable, "-m", "dualspeechlm.training.train_dualspeechlm", "--init-from", "me/tiny", "--corpus",
         "me/tiny-corpus", "--output-dir", str(tuned), "--cache-dir", str(tmp_path / "cache"), "--steps", "2",
         "--batch-size", "2", "--warmup-steps", "1", "--logging-steps", "1", "--skip-evaluation"],
        env=env, capture_output=True, text=True, timeout=300)
    assert fine_tune.returncode == 0, fine_tune.stderr[-3000:]
    log = json.loads((tuned / "training_log.json").read_text())
    assert [entry["step"] for entry in log if "loss" in entry] == [1, 2]
    assert (tuned / "model.safetensors").is_file() and (tuned / "ustokenizer" / "config.json").is_file()


def test_refused_token_and_lost_connection_fail_clearly_and_keep_the_folder(model_folder, hub_server, hub_api):
    before = tree_digest(model_folder)
    with pytest.raises(PublishError, match=r"refused the model repo me/tiny .*HTTP 401.*--token"):
        publish(model_folder, "me/tiny", token="hf_wrong", endpoint=hub_server.endpoint)
    hub_server.fail("commit", status=None)  # the connection drops mid-upload
    with pytest.raises(PublishError, match="lost the connection while pushing the model repo me/tiny.*rerun"):
        publish(model_folder, "me/tiny", token=hub_server.token, endpoint=hub_server.endpoint)
    assert tree_digest(model_folder) == before
    assert "model.safetensors" not in hub_api.list_repo_files("me/tiny")
    publish(model_folder, "me/tiny", token=hub_server.token, endpoint=hub_server.endpoint)  # the rerun finishes
    assert "model.safetensors" in hub_api.list_repo_files("me/tiny")


def test_model_card_names_a_codec_that_reads_the_ustokens(model_folder, tmp_path):
    assert "reads the USTokens" not in str(render_model_card(model_folder, "me/tiny"))
    folder = tmp_path / "model"
    shutil.copytree(model_folder, folder)
    config = json.loads((folder / "config.json").read_text())
    codec_config = config["codec_config"]
    (folder / "config.json").write_text(json.dumps(
        {**config, "codec_config": {**codec_config, "ustoken_vocab_size": 1024, "ustoken_decode_codebooks": 1}}))
    card = str(render_model_card(folder, "me/tiny"))
    assert "its decoder reads the USTokens + 1 codebook(s)" in card
    assert "speaker embedding" not in card.split("decoder reads")[1][:40]
    assert "not run when generating" not in card  # AcousticGPT writes the codebook the decoder reads
    (folder / "config.json").write_text(json.dumps({**config, "codec_config": {
        **codec_config, "ustoken_vocab_size": 1024, "ustoken_decode_codebooks": 0, "speaker_embedding_size": 512}}))
    card = str(render_model_card(folder, "me/tiny"))
    assert "its decoder reads the USTokens + 0 codebook(s) and the speaker embedding" in card
    assert "trained, but not run when generating: the codec reads no codes" in card
    config = json.loads((folder / "config.json").read_text())  # as last written
    (folder / "config.json").write_text(json.dumps({**config, "acoustic_loss_weight": 0.0}))
    assert "not trained (acoustic_loss_weight 0): the model speaks through a codec that reads no codes" in str(
        render_model_card(folder, "me/tiny"))
