"""Heavy end-to-end checks, run apart from the default suite: `make test-slow`."""

import json
import time

import pytest

from dualspeechlm.processing.corpus import TRAIN_VOICES, CorpusConfig, build_corpus, load_corpus

pytestmark = pytest.mark.slow


def test_default_corpus_builds_within_ten_minutes(tmp_path, speech_engines):
    started = time.perf_counter()
    manifest = build_corpus(tmp_path / "corpus", CorpusConfig())
    seconds = time.perf_counter() - started
    assert seconds < 600, f"default corpus took {seconds:.0f} s to build"
    assert manifest["configs"]["speech"]["splits"]["train"] >= 12000
    assert {u["speaker"] for u in manifest["utterances"] if u["split"] == "train"} == {v.name for v in TRAIN_VOICES}
    assert json.loads((tmp_path / "corpus" / "manifest.json").read_text())["hours"] == manifest["hours"]
    speech = load_corpus(tmp_path / "corpus", "speech")
    assert {split: len(rows) for split, rows in speech.items()} == {
        "train": 12800, "validation": 200, "test": 200, "test_unseen_voice": 200}
