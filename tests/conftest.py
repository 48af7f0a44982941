"""Shared fixtures. Tests never reach the Hub: HF_HUB_OFFLINE is set before any HF library loads."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402


def require_tool(name: str, package: str) -> None:
    """Fail (never skip) when a system tool the test needs is missing: `make setup` installs it."""
    if shutil.which(name) is None:
        pytest.fail(f"{name} is required for this test but is not on PATH; install it with "
                    f"`apt-get install {package}` (`make setup` does this)")


@pytest.fixture(scope="session", autouse=True)
def judge_cache(tmp_path_factory):
    """The judges' transcript cache in a session tmp folder, never the user's ~/.cache. Session-wide (and in
    os.environ, so subprocesses inherit it) because module-scoped judges open their cache before a test's own
    fixtures run; a test that needs an empty cache passes its own `cache_dir`."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DUALSPEECHLM_JUDGE_CACHE", str(tmp_path_factory.mktemp("judge-cache")))
        yield


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine threads spin
    (10-100x slower); `pytestmark = pytest.mark.usefixtures("one_thread")` in a module opts in."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def espeak():
    require_tool("espeak-ng", "espeak-ng")


@pytest.fixture(scope="session")
def speech_engines():
    """The corpus' three speech engines and its festival voice (`make setup` installs them)."""
    for name, package in (("flite", "flite"), ("festival", "festival"), ("espeak-ng", "espeak-ng")):
        require_tool(name, package)
    from dualspeechlm.processing.corpus import festival

    if "cmu_us_slt_arctic_hts" not in festival.installed():
        pytest.fail("festival's voice cmu_us_slt_arctic_hts is required; install it with "
                    "`apt-get install festvox-us-slt-hts` (`make setup` does this)")


@pytest.fixture(scope="session")
def tiny_corpus_config():
    """1/100 of the default corpus (2..12 rows per split), the speech config at 1/400 (32 training rows) so that
    the tests that train on it stay fast."""
    from dualspeechlm.processing.corpus import CorpusConfig

    config = CorpusConfig(seed=0).scaled(0.01)
    config.sizes["speech"] = (32, 2, 2)
    return config


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory, speech_engines, tiny_corpus_config):
    """The corpus of `tiny_corpus_config`, built once per session."""
    from dualspeechlm.processing.corpus import build_corpus

    require_tool("ffmpeg", "ffmpeg")  # datasets decodes the Audio column with torchcodec + ffmpeg
    path = tmp_path_factory.mktemp("corpus") / "corpus"
    build_corpus(path, tiny_corpus_config)
    return path


@pytest.fixture(scope="session")
def whisper_dir(tmp_path_factory):
    """OpenAI Whisper tiny.en converted to a transformers folder, once per session (a few seconds)."""
    from dualspeechlm.convert_ctranslate2_whisper import convert_ctranslate2_whisper

    return convert_ctranslate2_whisper(tmp_path_factory.mktemp("whisper") / "whisper-tiny.en")


@pytest.fixture(scope="session")
def tiny_parts(tmp_path_factory):
    """Tiny random stand-ins for the main job's parts that stages 1 and 3 read, once per session: `text_llm/` (a
    1-layer Llama of width 32 with a byte-level BPE of a few sentences), `codec/` (a mel codec of 2 x 16 codes,
    Griffin-Lim) and `speaker_encoder/`."""
    import torch
    from transformers import LlamaForCausalLM

    from dualspeechlm.codecs import MelCodecConfig, MelCodecModel
    from dualspeechlm.processing.text_tokenizer import train_text_tokenizer
    from dualspeechlm.speaker_encoder import SpeakerEncoderConfig, SpeakerEncoderModel
    from dualspeechlm.training.text_llm import small_llm_config

    parts = tmp_path_factory.mktemp("tiny_parts")
    torch.manual_seed(0)
    tokenizer = train_text_tokenizer(["anna saw the cat", "the speaker talks fast", "who has the red lamp?"] * 10,
                                     300)
    llm_config = small_llm_config(tokenizer, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                  num_attention_heads=2, num_key_value_heads=2)
    LlamaForCausalLM(llm_config).save_pretrained(parts / "text_llm")
    tokenizer.save_pretrained(parts / "text_llm")
    codec = MelCodecModel(MelCodecConfig(hidden_size=16, latent_size=8, num_quantizers=2, codebook_size=16,
                                         vocoder="griffin_lim", griffin_lim_iterations=2)).eval()
    # An untrained codec k-means-initialises its codebooks on the first batch it encodes, a random change of its
    # weights; do it here so that every run sees the same saved codec.
    codec.encode(0.1 * torch.randn(2, 16000))
    codec.save_pretrained(parts / "codec")
    SpeakerEncoderModel(SpeakerEncoderConfig(hidden_size=16, stats_size=16,
                                             attention_size=8)).eval().save_pretrained(parts / "speaker_encoder")
    return parts


WITHOUT_PACKAGE = """
import sys
sys.meta_path = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]
sys.path_hooks = [h for h in sys.path_hooks if not getattr(h, "__module__", "").startswith("__editable__")]
sys.path_importer_cache.clear()
repo = sys.argv.pop()
sys.path = [p for p in sys.path if p.startswith(sys.prefix) or not p.startswith(repo)]  # keep the venv
try:
    import dualspeechlm
except ModuleNotFoundError:
    pass
else:
    raise SystemExit("dualspeechlm is importable: the test would prove nothing")
"""


def run_without_package(script: str, *args, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run `script` (after WITHOUT_PACKAGE) in a fresh `python -I` where `dualspeechlm` cannot be
    imported: what a user of a saved model folder with `trust_remote_code=True` has."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), OMP_NUM_THREADS="1")
    repo = str(Path(__file__).resolve().parents[1])
    return subprocess.run([sys.executable, "-I", "-c", WITHOUT_PACKAGE + script, *map(str, args), repo],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


# ---- LoopbackHub: a fake Hugging Face Hub on 127.0.0.1 (tests/hub_server.py documents routes and faults) ----


@pytest.fixture
def hub_server(tmp_path):
    """A running LoopbackHub (`.endpoint`, `.token`, `.user`, `.fail(kind, times, status)`, `.requests`,
    `.unknown`) storing its repos under tmp_path/"hub". A fresh client process gets `hub_server.env(dir)`:
    HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE=0 and HF_HOME / HF_HUB_CACHE / HF_DATASETS_CACHE under `dir`."""
    from hub_server import LoopbackHub

    hub = LoopbackHub(tmp_path / "hub")
    yield hub
    hub.close()


@pytest.fixture
def hub_api(hub_server, tmp_path, monkeypatch):
    """`HfApi(endpoint=hub_server.endpoint, token=hub_server.token)` for this process. The session is offline
    (HF_HUB_OFFLINE=1, read at import), so offline mode is switched off, the download cache moved to tmp and
    xet (which the fake Hub never offers, and whose start-up writes logs to ~/.cache/huggingface/xet) disabled."""
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-hub-cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)
    return huggingface_hub.HfApi(endpoint=hub_server.endpoint, token=hub_server.token)
