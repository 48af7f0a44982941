import hashlib
import json

import numpy as np
import pytest

from dualspeechlm.processing.cli import main as data_cli
from dualspeechlm.processing.corpus import (
    AUDIO_COLUMNS,
    CONFIG_TASKS,
    SAMPLING_RATE,
    SPLITS,
    TRAIN_VOICES,
    UNSEEN_VOICE,
    CorpusConfig,
    build_corpus,
    corpus_audio,
    grammar,
    load_corpus,
    synthesize,
)
from dualspeechlm.processing.corpus.builder import _plan, _units
from dualspeechlm.processing.corpus.voices import STYLE_VOICES, styled

from test_synthesis import median_pitch

COLUMNS = {
    "speech": ["id", "audio", "duration", "speaker", "text", "language"],
    "style": ["id", "audio", "duration", "speaker", "text", "style", "answer"],
    "qa": ["id", "audio", "duration", "speaker", "passage", "question", "question_audio", "answer", "answer_audio"],
    "translation": ["id", "audio", "duration", "speaker", "text", "language", "translation",
                    "translation_audio", "translation_speaker"],
    "vc": ["id", "audio", "duration", "speaker", "text", "target_audio", "target_speaker"],
}
# The column that identifies a row's content, for split disjointness.
CONTENT = {"speech": "text", "style": "text", "qa": "passage", "translation": "text", "vc": "text"}


def decode(audio) -> tuple[np.ndarray, int]:
    samples = audio.get_all_samples()
    return samples.data.numpy(), samples.sample_rate


def file_digests(path):
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def test_same_seed_gives_same_bytes(tiny_corpus, tiny_corpus_config, tmp_path):
    build_corpus(tmp_path / "again", tiny_corpus_config)
    assert file_digests(tmp_path / "again") == file_digests(tiny_corpus)


def test_other_seed_gives_other_sentences(tiny_corpus, tmp_path):
    config = CorpusConfig(seed=1).scaled(0.005)
    other = build_corpus(tmp_path / "other", config)
    ours = json.loads((tiny_corpus / "manifest.json").read_text())
    assert ({u["text"] for u in other["utterances"]}
            != {u["text"] for u in ours["utterances"][:len(other["utterances"])]})


def test_every_task_present_with_its_columns(tiny_corpus):
    assert sorted(t for tasks in CONFIG_TASKS.values() for t in tasks) == sorted(
        ["asr", "s2tt", "ser", "sqa", "tts", "vc", "t2st", "sc"])
    for name, columns in COLUMNS.items():
        corpus = load_corpus(tiny_corpus, name)
        assert list(corpus) == list(SPLITS)
        for split in SPLITS:
            assert corpus[split].column_names == columns, (name, split)
            assert len(corpus[split]) >= 2


def test_splits_are_disjoint_and_voices_held_out(tiny_corpus):
    unseen, train_voices = UNSEEN_VOICE.name, {v.name for v in TRAIN_VOICES}
    for name, column in CONTENT.items():
        corpus = load_corpus(tiny_corpus, name)
        train = set(corpus["train"][column])
        for split in ("validation", "test", "test_unseen_voice"):
            assert not train & set(corpus[split][column]), f"{name}/{split} repeats a training sentence"
        assert set(corpus["test"][column]).isdisjoint(corpus["validation"][column])
        assert set(corpus["test_unseen_voice"]["speaker"]) == {unseen}
        assert set(corpus["train"]["speaker"]) <= train_voices
    speech = load_corpus(tiny_corpus, "speech")
    assert speech["test_unseen_voice"]["text"] == speech["test"]["text"]


def test_held_out_sentences_are_never_heard_in_any_training_split():
    """Across configs too: no training clip of the default corpus speaks a validation or test text of any config,
    whole or as one of its sentences (a QA passage holds several)."""
    plan = _plan(CorpusConfig())
    heard_in_training = set()
    for splits in plan.values():
        for row in splits["train"]:
            heard_in_training |= {unit for value in row.values() if isinstance(value, tuple)
                                  for unit in _units(value[0])}
    for name, splits in plan.items():
        for split in ("validation", "test", "test_unseen_voice"):
            spoken = {row["audio"][0] for row in splits[split]}
            assert len(spoken) == len(splits[split])
            assert not spoken & heard_in_training, f"{name}/{split}: {sorted(spoken & heard_in_training)[:3]}"


def test_held_out_splits_do_not_depend_on_the_training_size():
    """Four times the speech (and twice the style) training rows: every config's validation and test rows stay
    the same, sentence and voice, and the smaller speech training split is the start of the larger one."""
    small = CorpusConfig(seed=0).scaled(0.01)
    large = CorpusConfig(seed=0, sizes={**small.sizes,
                                        "speech": (4 * small.sizes["speech"][0], *small.sizes["speech"][1:]),
                                        "style": (2 * small.sizes["style"][0], *small.sizes["style"][1:])})
    small_plan, large_plan = _plan(small), _plan(large)
    for name in CONFIG_TASKS:
        for split in ("validation", "test", "test_unseen_voice"):
            assert large_plan[name][split] == small_plan[name][split], (name, split)
    small_train, large_train = small_plan["speech"]["train"], large_plan["speech"]["train"]
    assert len(large_train) == 4 * len(small_train) and large_train[: len(small_train)] == small_train


def test_audio_is_16khz_mono_with_recorded_duration(tiny_corpus):
    for name in CONFIG_TASKS:
        row = load_corpus(tiny_corpus, name)["validation"][0]
        for column in AUDIO_COLUMNS[name]:
            samples, rate = decode(row[column])
            assert rate == SAMPLING_RATE and samples.shape[0] == 1, (name, column)
            assert np.abs(samples).max() > 0.05, f"{name}/{column} is silent"
        samples, _ = decode(row["audio"])
        assert row["duration"] == pytest.approx(samples.shape[1] / SAMPLING_RATE, abs=1e-3)


def test_manifest_records_voices_sentences_durations(tiny_corpus):
    manifest = json.loads((tiny_corpus / "manifest.json").read_text())
    assert manifest["generator_version"] == "2.0.0"
    assert set(manifest["engines"]) == {"espeak-ng", "festival", "flite"} and all(manifest["engines"].values())
    assert manifest["engines"]["espeak-ng"].startswith("eSpeak NG")
    assert {v["engine"] for v in manifest["voices"]["train"]} == {"flite", "festival"}
    rows = sum(n for info in manifest["configs"].values() for n in info["splits"].values())
    assert len(manifest["utterances"]) == rows
    assert all(u["text"] and u["duration"] > 0.3 for u in manifest["utterances"])
    # every clip names its engine, voice and settings; the spoken text of `audio` is the utterance's text
    for utterance in manifest["utterances"]:
        assert utterance["clips"]["audio"]["text"] == utterance["text"]
        assert utterance["clips"]["audio"]["voice"] == utterance["speaker"]
        for clip in utterance["clips"].values():
            assert {"engine", "speaker", "rate", "pitch", "whisper"} <= set(clip)
    styles = [u for u in manifest["utterances"] if u["config"] == "style"]
    assert any(u["clips"]["audio"]["whisper"] for u in styles)
    assert any(u["clips"]["audio"]["rate"] > 1.5 for u in styles)
    assert manifest["hours"] > 0


def test_translation_and_vc_speakers(tiny_corpus):
    translation = load_corpus(tiny_corpus, "translation")["train"]
    for language, speaker in zip(translation["language"], translation["translation_speaker"]):
        assert language in ("es", "fr")
        assert speaker.startswith({"es": ("es_", "latam_"), "fr": ("fr_", "be_")}[language])
    vc = load_corpus(tiny_corpus, "vc")["train"]
    assert all(a != b for a, b in zip(vc["speaker"], vc["target_speaker"]))


def test_styles_are_audible(speech_engines):
    """Fast speech is shorter and high pitch is higher than the same style voice's normal speech."""
    voice, text = STYLE_VOICES[0], "the quiet horse slept behind the old bridge"
    audio = {style: synthesize(text, styled(voice, style))
             for style in ("normal", "fast", "slow", "high pitch", "low pitch")}
    assert len(audio["fast"]) < 0.8 * len(audio["normal"]) < 0.8 * 0.8 * len(audio["slow"])
    assert (median_pitch(audio["high pitch"]) > 1.2 * median_pitch(audio["normal"])
            > 1.2 * 1.2 * median_pitch(audio["low pitch"]))
    with pytest.raises(ValueError, match="unknown style 'angry'"):
        styled(voice, "angry")


def test_grammar_vocabulary_and_uniqueness():
    import random

    assert 200 <= len(grammar.english_vocabulary()) <= 500
    sentences = grammar.unique_sentences(random.Random(0), 500)
    assert len(set(sentences)) == 500
    assert set(" ".join(sentences).split()) <= grammar.english_vocabulary()
    with pytest.raises(ValueError, match="distinct"):
        grammar.unique_sentences(random.Random(0), 5, make=lambda rng: "always the same")


def test_build_is_reused_when_identical(tiny_corpus, tiny_corpus_config, capsys):
    before = file_digests(tiny_corpus)
    build_corpus(tiny_corpus, tiny_corpus_config)
    assert "up to date" in capsys.readouterr().out
    assert file_digests(tiny_corpus) == before


def test_load_corpus_errors(tiny_corpus, tmp_path):
    with pytest.raises(FileNotFoundError, match="dualspeechlm-data build"):
        load_corpus(tmp_path / "missing")
    with pytest.raises(ValueError, match="unknown corpus config"):
        load_corpus(tiny_corpus, "music")


def test_cli_build_and_summary(tmp_path, capsys, speech_engines):
    data_cli(["build", "--output-dir", str(tmp_path / "c"), "--scale", "0.002", "--size", "speech=6,2,2"])
    out = capsys.readouterr().out
    assert "| speech | asr, tts | 6 (" in out and UNSEEN_VOICE.name in out
    data_cli(["summary", "--corpus", str(tmp_path / "c")])
    assert "| vc | vc |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        data_cli(["build", "--size", "music=1,1,1"])


def test_corpora_in_same_named_folders_do_not_share_a_cache(tiny_corpus, tmp_path):
    """datasets keys `load_dataset(folder, config)`'s cache on the folder name; load_corpus must not."""
    other = tmp_path / tiny_corpus.name
    build_corpus(other, CorpusConfig(seed=0, sizes={**CorpusConfig().scaled(0.002).sizes, "speech": (6, 2, 2)}))
    assert len(load_corpus(other, "speech")["train"]) == 6
    assert len(load_corpus(tiny_corpus, "speech")["train"]) == 32


def test_corpus_audio_gives_plain_lists(tiny_corpus):
    # datasets >= 5.2 hands out a lazy Column for a dataset column; callers concatenate and JSON-dump these lists
    rows = corpus_audio(tiny_corpus, "train", limit=3)
    assert all(type(rows[name]) is list and len(rows[name]) == 3 for name in ("audio", "text", "speaker"))
    assert rows["speaker"] + ["another voice"] and json.dumps(rows["text"])
    assert all(a.dtype == np.float32 and a.ndim == 1 and len(a) > 0 for a in rows["audio"])
