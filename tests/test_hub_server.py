"""The real Hugging Face clients end to end against LoopbackHub (tests/hub_server.py), a loopback fake Hub."""

import io
import json
import os
import subprocess
import sys

import httpx2
import numpy as np
import pytest
import soundfile as sf
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfFileSystem
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils.sha import git_hash

pytestmark = pytest.mark.usefixtures("one_thread")


def run_client(hub, tmp_path, script, *args):
    """Run `script` in a fresh Python whose HF clients see only `hub` (HF_ENDPOINT, token, caches under tmp)."""
    proc = subprocess.run([sys.executable, "-c", script, *map(str, args)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env=hub.env(tmp_path / "client", OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def test_repos_upload_download_revisions_delete(hub_server, hub_api, tmp_path):
    user = hub_api.whoami()["name"]
    assert user == hub_server.user
    url = hub_api.create_repo(f"{user}/model")
    assert (url.repo_id, url.repo_type, url.endpoint) == (f"{user}/model", "model", hub_server.endpoint)
    assert hub_api.create_repo(f"{user}/model", exist_ok=True).repo_id == f"{user}/model"
    with pytest.raises(HfHubHTTPError) as err:
        hub_api.create_repo(f"{user}/model")
    assert err.value.response.status_code == 409
    assert hub_api.create_repo("data", repo_type="dataset").repo_id == f"{user}/data"
    space = hub_api.create_repo("demo", repo_type="space", space_sdk="gradio")
    assert (space.repo_type, hub_api.space_info(f"{user}/demo").sdk) == ("space", "gradio")

    folder = tmp_path / "upload"
    (folder / "sub").mkdir(parents=True)
    files = {"weights.bin": bytes(range(256)) * 40 + os.urandom(3000), "sub/notes.txt": "héllo\n".encode()}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    first = hub_api.upload_folder(repo_id=f"{user}/model", folder_path=folder, commit_message="first")
    assert len(first.oid) == 40 and first.commit_url.endswith(first.oid)
    assert hub_api.list_repo_files(f"{user}/model") == [".gitattributes", "sub/notes.txt", "weights.bin"]
    info = hub_api.model_info(f"{user}/model", files_metadata=True)
    assert info.sha == first.oid and {s.rfilename: s.size for s in info.siblings}["weights.bin"] == 13240
    for name, data in files.items():
        assert open(hub_api.hf_hub_download(f"{user}/model", name), "rb").read() == data
    snapshot = hub_api.snapshot_download(f"{user}/model")
    assert all(open(os.path.join(snapshot, name), "rb").read() == data for name, data in files.items())

    second = hub_api.create_commit(f"{user}/model", commit_message="second", operations=[
        CommitOperationAdd("sub/notes.txt", b"changed"), CommitOperationDelete("weights.bin")])
    assert second.oid != first.oid and hub_api.model_info(f"{user}/model").sha == second.oid
    assert hub_api.list_repo_files(f"{user}/model") == [".gitattributes", "sub/notes.txt"]
    assert open(hub_api.hf_hub_download(f"{user}/model", "sub/notes.txt"), "rb").read() == b"changed"
    old = hub_api.hf_hub_download(f"{user}/model", "weights.bin", revision=first.oid)
    assert open(old, "rb").read() == files["weights.bin"]
    assert hub_api.list_repo_files(f"{user}/model", revision=first.oid) == [".gitattributes", "sub/notes.txt",
                                                                            "weights.bin"]
    tree = {e.path: e for e in hub_api.list_repo_tree(f"{user}/model", revision=first.oid, expand=True)}
    assert tree["weights.bin"].last_commit.oid == first.oid and tree["sub"].last_commit.title == "first"
    paths = hub_api.get_paths_info(f"{user}/model", ["sub", "sub/notes.txt", "missing"], revision=first.oid)
    assert [(type(p).__name__, p.path) for p in paths] == [("RepoFolder", "sub"), ("RepoFile", "sub/notes.txt")]
    assert paths[1].blob_id == git_hash(files["sub/notes.txt"]) and paths[1].size == len(files["sub/notes.txt"])

    # HfFileSystem reads a slice with an HTTP Range request; the server answers 206 / 416
    fs = HfFileSystem(endpoint=hub_server.endpoint, token=hub_server.token)
    with fs.open(f"{user}/model@{first.oid}/weights.bin", "rb", block_size=1024) as f:
        f.seek(5000)
        assert f.read(100) == files["weights.bin"][5000:5100]
    resolve = f"{hub_server.endpoint}/{user}/model/resolve/{first.oid}/weights.bin"
    r = httpx2.get(resolve, headers={"Range": "bytes=-10"})
    assert (r.status_code, r.content) == (206, files["weights.bin"][-10:])
    assert r.headers["Content-Range"] == "bytes 13230-13239/13240" and r.headers["X-Repo-Commit"] == first.oid
    assert httpx2.get(resolve, headers={"Range": "bytes=20000-"}).status_code == 416

    hub_api.delete_folder("sub", repo_id=f"{user}/model")
    assert hub_api.list_repo_files(f"{user}/model") == [".gitattributes"]
    hub_api.delete_repo(f"{user}/model")
    assert not hub_api.repo_exists(f"{user}/model") and hub_api.repo_exists(f"{user}/data", repo_type="dataset")
    assert hub_server.unknown == []


def test_auth_refused(hub_server, hub_api):
    wrong = type(hub_api)(endpoint=hub_server.endpoint, token="hf_wrong")
    anonymous = type(hub_api)(endpoint=hub_server.endpoint, token=False)
    for api in (wrong, anonymous):
        with pytest.raises(HfHubHTTPError) as err:
            api.create_repo("nope")
        assert err.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError, match="Invalid user token") as err:
        wrong.whoami()
    assert err.value.response.status_code == 401
    assert not hub_api.repo_exists(f"{hub_server.user}/nope")
    assert hub_api.whoami()["name"] == hub_server.user

    hub_api.create_repo("public")
    with pytest.raises(HfHubHTTPError) as err:
        anonymous.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=f"{hub_server.user}/public")
    assert err.value.response.status_code == 401
    assert anonymous.list_repo_files(f"{hub_server.user}/public") == [".gitattributes"]  # public reads need no token
    hub_api.create_repo("secret", private=True)
    assert not anonymous.repo_exists(f"{hub_server.user}/secret") and hub_api.repo_exists(f"{hub_server.user}/secret")
    assert hub_server.unknown == []


def test_fault_injection(hub_server, hub_api):
    repo = hub_api.create_repo("faulty").repo_id
    before = hub_api.model_info(repo).sha
    hub_server.fail("commit")  # the connection drops while the commit is being sent
    with pytest.raises(httpx2.TransportError):
        hub_api.upload_file(path_or_fileobj=b"payload", path_in_repo="a.txt", repo_id=repo)
    hub_server.fail("commit", status=503)
    with pytest.raises(HfHubHTTPError) as err:
        hub_api.upload_file(path_or_fileobj=b"payload", path_in_repo="a.txt", repo_id=repo)
    assert err.value.response.status_code == 503
    assert hub_api.model_info(repo).sha == before and hub_api.list_repo_files(repo) == [".gitattributes"]
    assert [k for _, k, _ in hub_server.requests].count("commit") == 2
    hub_api.upload_file(path_or_fileobj=b"payload", path_in_repo="a.txt", repo_id=repo)  # faults are used up
    assert hub_api.list_repo_files(repo) == [".gitattributes", "a.txt"]
    assert hub_server.unknown == []


REMOTE_CONFIG = '''
from transformers import PretrainedConfig

class TinyRemoteConfig(PretrainedConfig):
    model_type = "tiny-remote"

    def __init__(self, width=3, **kwargs):
        self.width = width
        super().__init__(**kwargs)
'''

LOAD_MODEL = """
import sys, torch
from transformers import AutoConfig, AutoModelForCausalLM
repo, remote, ids, out = sys.argv[1:]
model = AutoModelForCausalLM.from_pretrained(repo).eval()
with torch.no_grad():
    logits = model(torch.load(ids)).logits
config = AutoConfig.from_pretrained(remote, trust_remote_code=True)
torch.save({"logits": logits, "config": (type(config).__name__, config.width)}, out)
"""


def test_from_pretrained_in_fresh_process(hub_server, hub_api, tmp_path):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2)).eval()
    model.save_pretrained(tmp_path / "llama")
    repo = hub_api.create_repo("tiny-llama").repo_id
    hub_api.upload_folder(repo_id=repo, folder_path=tmp_path / "llama")
    remote = hub_api.create_repo("tiny-remote").repo_id
    (tmp_path / "remote").mkdir()
    (tmp_path / "remote" / "configuration_tiny.py").write_text(REMOTE_CONFIG)
    (tmp_path / "remote" / "config.json").write_text(json.dumps(
        {"model_type": "tiny-remote", "width": 7, "auto_map": {"AutoConfig": "configuration_tiny.TinyRemoteConfig"}}))
    hub_api.upload_folder(repo_id=remote, folder_path=tmp_path / "remote")

    ids = torch.randint(0, 100, (2, 9), generator=torch.Generator().manual_seed(1))
    torch.save(ids, tmp_path / "ids.pt")
    with torch.no_grad():
        expected = model(ids).logits
    run_client(hub_server, tmp_path, LOAD_MODEL, repo, remote, tmp_path / "ids.pt", tmp_path / "out.pt")
    out = torch.load(tmp_path / "out.pt")
    assert out["config"] == ("TinyRemoteConfig", 7)
    assert out["logits"].shape == (2, 9, 100) and torch.allclose(out["logits"], expected, atol=1e-5)
    assert hub_server.unknown == []


README = """---
configs:
- config_name: clean
  data_files:
  - split: train
    path: clean/train-*
  - split: test
    path: clean/test-*
- config_name: noisy
  data_files:
  - split: train
    path: "noisy/train-*.parquet"
  - split: test
    path: "noisy/test-*.parquet"
---
# Tiny speech
"""

LOAD_DATASET = """
import hashlib, json, sys
import datasets
repo, out, *configs = sys.argv[1:]
result = {}
for config in configs:
    for split, rows in datasets.load_dataset(repo, config).items():
        result[f"{config}/{split}"] = []
        for row in rows:
            audio = row["audio"].get_all_samples()  # a torchcodec AudioDecoder: decode once (FLAC cannot seek back)
            result[f"{config}/{split}"].append({"id": row["id"], "text": row["text"], "rate": audio.sample_rate,
                                                "samples": audio.data[0].tolist()})
raw = datasets.load_dataset(repo, configs[0], split="test").cast_column("audio", datasets.Audio(decode=False))
result["raw_sha"] = [hashlib.sha256(r["audio"]["bytes"]).hexdigest() for r in raw]
streamed = datasets.load_dataset(repo, configs[0], split="train", streaming=True)  # HfFileSystem, Range requests
result["streamed_ids"] = [r["id"] for r in streamed.remove_columns("audio")]
json.dump(result, open(out, "w"))
"""


def test_load_dataset_in_fresh_process(hub_server, hub_api, tmp_path):
    import hashlib

    from datasets import Audio, Dataset, Features, Value

    features = Features({"id": Value("string"), "text": Value("string"), "audio": Audio()})
    rng = np.random.default_rng(0)
    expected = {}
    for config, fmt in (("clean", "WAV"), ("noisy", "FLAC")):
        for split, n in (("train", 3), ("test", 2)):
            rows = []
            for i in range(n):
                pcm = rng.integers(-20000, 20000, 400 + 80 * i).astype(np.int16)
                buf = io.BytesIO()
                sf.write(buf, pcm, 16000, format=fmt, subtype="PCM_16")
                rows.append({"id": f"{config}-{split}-{i}", "text": f"{split} {i}", "pcm": pcm,
                             "bytes": buf.getvalue()})
            expected[config, split] = rows
            path = tmp_path / "data" / config / f"{split}-00000-of-00001.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            Dataset.from_dict({"id": [r["id"] for r in rows], "text": [r["text"] for r in rows],
                               "audio": [{"bytes": r["bytes"], "path": None} for r in rows]},
                              features=features).to_parquet(path)
    (tmp_path / "data" / "README.md").write_text(README)
    repo = hub_api.create_repo("tiny-speech", repo_type="dataset").repo_id
    hub_api.upload_folder(repo_id=repo, repo_type="dataset", folder_path=tmp_path / "data")

    run_client(hub_server, tmp_path, LOAD_DATASET, repo, tmp_path / "out.json", "noisy", "clean")
    out = json.loads((tmp_path / "out.json").read_text())
    assert set(out) == ({f"{c}/{s}" for c in ("noisy", "clean") for s in ("train", "test")}
                        | {"raw_sha", "streamed_ids"})
    for (config, split), rows in expected.items():
        got = out[f"{config}/{split}"]
        assert [(r["id"], r["text"], r["rate"]) for r in got] == [(r["id"], r["text"], 16000) for r in rows]
        for row, original in zip(got, rows):
            np.testing.assert_allclose(row["samples"], original["pcm"] / 32768, atol=1e-6)
    assert out["raw_sha"] == [hashlib.sha256(r["bytes"]).hexdigest() for r in expected["noisy", "test"]]
    assert out["streamed_ids"] == [r["id"] for r in expected["noisy", "train"]]
    assert hub_server.unknown == []
