"""The same round trip as test_publishing.py against the real Hub, in a private repo deleted afterwards.
Runs only where a token (HF_TOKEN) and the network exist; elsewhere pytest reports it skipped, with why."""

import os
import subprocess
import sys
import uuid

import pytest

from test_publishing import model_folder  # noqa: F401  (a fixture)


def hub_reachable() -> bool:
    import httpx2

    try:
        return httpx2.head("https://huggingface.co", timeout=5).status_code < 500
    except httpx2.HTTPError:
        return False


pytestmark = pytest.mark.skipif(not os.environ.get("HF_TOKEN") or not hub_reachable(),
                                reason="live Hub test: needs HF_TOKEN and a network that reaches huggingface.co")

ROUND_TRIP = """
import sys, torch
from huggingface_hub import HfApi
from transformers import AutoModel
from dualspeechlm.publishing.push import publish
folder, name = sys.argv[1:3]
api = HfApi()
repo = f"{api.whoami()['name']}/{name}"
try:
    publish(folder, repo, private=True)
    model = AutoModel.from_pretrained(repo, trust_remote_code=True).eval()
    local = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    ids = torch.arange(3, 40).view(1, -1)
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, local(input_ids=ids).logits)
    assert "README.md" in api.list_repo_files(repo)
finally:
    api.delete_repo(repo, missing_ok=True)
print("round trip ok")
"""


def test_push_and_load_back_from_the_real_hub(model_folder, tmp_path):  # noqa: F811
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf"), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", ROUND_TRIP, str(model_folder),
                             f"dualspeechlm-ci-{uuid.uuid4().hex[:8]}"],
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and "round trip ok" in result.stdout, result.stderr[-3000:]
