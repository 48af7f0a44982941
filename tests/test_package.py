"""The installed package: what `import dualspeechlm` gives, and its code style."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

REGISTERED = """
import dualspeechlm
from transformers import AutoConfig, AutoModel
from transformers.models.auto.feature_extraction_auto import FEATURE_EXTRACTOR_MAPPING
from transformers.models.auto.processing_auto import PROCESSOR_MAPPING
for model_type, model in (("dualspeechlm", dualspeechlm.DualSpeechLMForConditionalGeneration),
                          ("dualspeechlm_ustokenizer", dualspeechlm.USTokenizerModel),
                          ("dualspeechlm_speaker_encoder", dualspeechlm.SpeakerEncoderModel),
                          ("dualspeechlm_mel_codec", dualspeechlm.MelCodecModel)):
    config_class = type(AutoConfig.for_model(model_type))
    assert AutoModel._model_mapping[config_class] is model, model_type
assert FEATURE_EXTRACTOR_MAPPING[dualspeechlm.USTokenizerConfig] is dualspeechlm.USTokenizerFeatureExtractor
assert PROCESSOR_MAPPING[dualspeechlm.DualSpeechLMConfig] is dualspeechlm.DualSpeechLMProcessor
print("registered")
"""


def test_importing_the_package_registers_its_classes_with_the_auto_classes():
    # a fresh process: nothing imported a model file before the package
    done = subprocess.run([sys.executable, "-c", REGISTERED], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "registered", done.stderr[-2000:]



def test_the_code_passes_ruff():
    """`ruff check .` with the repository's ruff.toml (119 columns, pyflakes, pycodestyle, sorted imports)."""
    beside_python = Path(sys.executable).with_name("ruff")
    ruff = str(beside_python) if beside_python.is_file() else shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed: `pip install -e .[dev]` installs it")
    done = subprocess.run([ruff, "check", "--no-cache", "."], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"ruff check . found problems:\n{done.stdout}{done.stderr}"
