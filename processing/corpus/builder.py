"""Build the embedded multi-task speech corpus as a `datasets` folder.

Five configs cover the paper's eight tasks; every config has the same four splits:

| config        | tasks      | columns (besides `id`, `speaker`, `duration`)                           |
|---------------|------------|-------------------------------------------------------------------------|
| `speech`      | ASR, TTS   | audio, text, language                                                   |
| `style`       | SER        | audio, text, style, answer                                              |
| `qa`          | SQA, SC    | audio (passage), passage, question, question_audio, answer, answer_audio |
| `translation` | S2TT, T2ST | audio (English), text, language, translation, translation_audio,        |
|               |            | translation_speaker                                                     |
| `vc`          | VC         | audio (source), text, target_audio, target_speaker                      |

Splits: `train`, `validation`, `test` (sentences never in train) and `test_unseen_voice` (the
test sentences spoken by a voice never in train). `duration` is the length of `audio` in seconds.
The held-out splits are drawn before `train`, each pool from its own random stream, so a corpus with more (or
fewer) training rows keeps the same validation and test rows: models trained on corpora of different sizes are
scored on the same sentences and voices.

The folder holds one parquet file per config and split, a README.md whose YAML declares the
configs (so `datasets.load_dataset(folder, "speech")` and `push_to_hub` work as on the Hub) and
`manifest.json` (generator version, voices, every utterance's text, voice and duration).
Same seed and sizes give the same bytes.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
from tqdm.auto import tqdm

from . import grammar
from .synthesis import SAMPLING_RATE, Voice, encode_flac, engine_version, synthesize_many
from .voices import STYLE_DESCRIPTIONS, STYLE_VOICES, TRAIN_VOICES, TRANSLATION_VOICES, UNSEEN_VOICE, styled

GENERATOR_VERSION = "2.0.0"  # 2.0: English spoken by flite and festival voices built from real recordings
CARD_DATASET_PATH = "path/to/corpus"  # the dataset card's loading example; `dualspeechlm-push` puts the repo id there
SPLITS = ("train", "validation", "test", "test_unseen_voice")
CONFIG_TASKS = {
    "speech": ("asr", "tts"),
    "style": ("ser",),
    "qa": ("sqa", "sc"),
    "translation": ("s2tt", "t2st"),
    "vc": ("vc",),
}
# Audio columns of each config (mono 16 kHz, the same feature as `hub_datasets`, so the two
# concatenate); every other column is a string except `duration`.
AUDIO_COLUMNS = {
    "speech": ("audio",),
    "style": ("audio",),
    "qa": ("audio", "question_audio", "answer_audio"),
    "translation": ("audio", "translation_audio"),
    "vc": ("audio", "target_audio"),
}


@dataclass
class CorpusConfig:
    """What to build. `sizes[config] = (train, validation, test)`; `test_unseen_voice` mirrors test."""

    seed: int = 0
    # 12,800 speech sentences, not 3,200: the small LLMs learn 3,200 by heart and generalise with more at the
    # same steps
    sizes: dict[str, tuple[int, int, int]] = field(
        default_factory=lambda: {
            "speech": (12800, 200, 200),
            "style": (1200, 120, 120),
            "qa": (600, 60, 60),
            "translation": (1000, 100, 100),
            "vc": (600, 60, 60),
        }
    )
    workers: int = 2

    def scaled(self, factor: float) -> "CorpusConfig":
        """The same corpus with every split `factor` times as large (at least 2 rows each)."""
        sizes = {name: tuple(max(2, round(n * factor)) for n in split) for name, split in self.sizes.items()}
        return CorpusConfig(seed=self.seed, sizes=sizes, workers=self.workers)


# Each kind of text: its item maker and its pool key, the English text that must not repeat across splits (a
# sentence; a translation's English side; a QA example's passage).
_STREAMS = {
    "english": (grammar.english_sentence, lambda sentence: sentence),
    "translation": (grammar.translation_example, lambda example: example[0]),
    "qa": (grammar.question_answer, lambda example: example[0]),
}


def _units(text: str) -> set[str]:
    """A text and each of its sentences."""
    return {text} | {sentence.strip() for sentence in re.split(r"[.?!]", text) if sentence.strip()}


def _draw_pools(seed: int, counts: dict[str, tuple[int, int, int]]) -> dict[str, dict[str, list]]:
    """Disjoint train / validation / test pools of distinct items for each stream of `_STREAMS`.

    Validation and test come first in each stream, so they do not depend on how many training items follow (and
    a smaller train pool is the start of a larger one). No training item of any stream speaks a held-out text
    (validation or test) of any stream, whole or as one of its sentences, so whatever the config a held-out
    sentence is never heard in training.
    """
    streams = {name: random.Random(f"{seed}/{name}") for name in _STREAMS}
    pools: dict[str, dict[str, list]] = {}
    for name, (make, key) in _STREAMS.items():
        _, validation, test = counts[name]
        held_out = grammar.unique_sentences(streams[name], validation + test, make=make, key=key)
        pools[name] = {"validation": held_out[:validation], "test": held_out[validation:]}
    held_out_texts = {key(item) for name, (_, key) in _STREAMS.items() for split in ("validation", "test")
                      for item in pools[name][split]}
    for name, (make, key) in _STREAMS.items():
        pools[name]["train"] = grammar.unique_sentences(
            streams[name], counts[name][0], make=make, key=key,
            allowed=lambda item, key=key: not _units(key(item)) & held_out_texts,
        )
    return pools


def _voice_for(split: str, index: int, voices: tuple[Voice, ...] = TRAIN_VOICES) -> Voice:
    """Round-robin over `voices` (balanced per-voice counts); the unseen voice alone speaks `test_unseen_voice`."""
    return UNSEEN_VOICE if split == "test_unseen_voice" else voices[index % len(voices)]


def _plan(config: CorpusConfig) -> dict[str, dict[str, list[dict]]]:
    """Every row of every config and split, with `(text, Voice)` pairs where audio goes."""
    seed, sizes = config.seed, config.sizes
    english_needs = tuple(max(sizes[c][i] for c in ("speech", "style", "vc")) for i in range(3))
    # one question per passage, so no passage is heard in two splits
    pools = _draw_pools(seed, {"english": english_needs, "translation": sizes["translation"], "qa": sizes["qa"]})
    english, translations, questions = pools["english"], pools["translation"], pools["qa"]

    plan: dict[str, dict[str, list[dict]]] = {name: {} for name in CONFIG_TASKS}
    for split in SPLITS:
        pool_split = "test" if split == "test_unseen_voice" else split
        index = ("train", "validation", "test").index(pool_split)
        sentences = english[pool_split]
        # the style and VC picks of a split have their own stream, so one split's size does not move another's
        rng = random.Random(f"{seed}/picks/{pool_split}")
        plan["speech"][split] = [
            {"audio": (text, _voice_for(split, i)), "text": text, "language": "en"}
            for i, text in enumerate(sentences[: sizes["speech"][index]])
        ]
        style_names = sorted(STYLE_DESCRIPTIONS)
        plan["style"][split] = []
        for i, text in enumerate(rng.sample(sentences, sizes["style"][index])):
            style = style_names[i % len(style_names)]
            plan["style"][split].append({
                "audio": (text, styled(_voice_for(split, i // len(style_names), STYLE_VOICES), style)),
                "text": text, "style": style, "answer": STYLE_DESCRIPTIONS[style],
            })
        plan["qa"][split] = [
            {"audio": (passage, voice), "passage": passage, "question": question,
             "question_audio": (question, voice), "answer": answer, "answer_audio": (answer, voice)}
            for i, (passage, question, answer) in enumerate(questions[pool_split])
            for voice in [_voice_for(split, i)]
        ]
        plan["translation"][split] = [
            {"audio": (text, _voice_for(split, i)), "text": text, "language": language,
             "translation": translation, "translation_audio": (translation, target_voice)}
            for i, (text, translation, language) in enumerate(translations[pool_split])
            for target_voice in [TRANSLATION_VOICES[language][i % len(TRANSLATION_VOICES[language])]]
        ]
        plan["vc"][split] = []
        for i, text in enumerate(rng.sample(sentences, sizes["vc"][index])):
            # an offset of 1..n-1 voices away from the source, so source and target always differ
            target = TRAIN_VOICES[(i + 1 + rng.randrange(len(TRAIN_VOICES) - 1)) % len(TRAIN_VOICES)]
            plan["vc"][split].append(
                {"audio": (text, _voice_for(split, i)), "text": text, "target_audio": (text, target)}
            )
    return plan


# The speaker column that names the voice of each audio column besides `audio` itself.
SPEAKER_COLUMNS = {"audio": "speaker", "target_audio": "target_speaker", "translation_audio": "translation_speaker"}


def _features(config_name: str, columns: list[str]) -> datasets.Features:
    audio = set(AUDIO_COLUMNS[config_name])
    return datasets.Features({
        column: datasets.Audio(sampling_rate=SAMPLING_RATE, num_channels=1) if column in audio
        else datasets.Value("float32") if column == "duration" else datasets.Value("string")
        for column in columns
    })


def _synthesize_all(jobs: list[tuple[str, Voice]], workers: int) -> dict[tuple[str, Voice], tuple[bytes, float]]:
    """FLAC bytes and duration for each distinct `(text, voice)`."""
    clips = synthesize_many(jobs, workers)
    return {job: (encode_flac(audio), len(audio) / SAMPLING_RATE)
            for job, audio in zip(jobs, tqdm(clips, desc="encoding", unit="utt"))}


def _voice_record(voice: Voice) -> dict:
    """What the manifest says of the voice of one clip: the corpus speaker, its engine and settings."""
    return {"voice": voice.name, "engine": voice.engine, "speaker": voice.speaker, "rate": voice.rate,
            "pitch": voice.pitch, "whisper": voice.whisper}


def _finalize(config_name: str, split: str, index: int, planned: dict, audio) -> dict:
    """A planned row with its audio filled in, plus id, speakers and duration."""
    row_id = f"{config_name}-{split}-{index:05d}"
    row = {"id": row_id}
    for column, value in planned.items():
        if column in AUDIO_COLUMNS[config_name]:
            flac, duration = audio[value]
            row[column] = {"bytes": flac, "path": f"{row_id}-{column}.flac"}
            if column == "audio":
                row["duration"] = duration
            if column in SPEAKER_COLUMNS:
                row[SPEAKER_COLUMNS[column]] = value[1].name
        else:
            row[column] = value
    return row


def _described(voice: Voice) -> str:
    settings = "".join(f", {name} x{value:g}" for name, value in (("rate", voice.rate), ("pitch", voice.pitch))
                       if value != 1)
    return f"{voice.engine} `{voice.speaker}`{settings}"


def _dataset_card(config: CorpusConfig, counts: dict, hours: float) -> str:
    yaml_configs = "\n".join(
        f"- config_name: {name}\n  data_files:\n"
        + "\n".join(f"  - split: {split}\n    path: {name}/{split}-*.parquet" for split in SPLITS)
        for name in CONFIG_TASKS
    )
    table = "\n".join(
        f"| `{name}` | {', '.join(t.upper() for t in CONFIG_TASKS[name])} | "
        + " | ".join(str(counts[name][split]) for split in SPLITS) + " |"
        for name in CONFIG_TASKS
    )
    voices = ", ".join(f"`{v.name}` ({_described(v)})" for v in TRAIN_VOICES)
    return f"""---
license: cc0-1.0
language: [en, es, fr]
task_categories: [automatic-speech-recognition, text-to-speech]
pretty_name: DualSpeechLM embedded synthetic speech corpus
configs:
{yaml_configs}
---

# DualSpeechLM embedded corpus

Synthetic multi-task speech made offline with flite, festival and espeak-ng by `dualspeechlm-data build`
(generator {GENERATOR_VERSION}, seed {config.seed}): {hours:.2f} hours of 16 kHz mono audio.

| config | tasks | {' | '.join(SPLITS)} |
|---|---|{'---|' * len(SPLITS)}
{table}

`test` holds sentences never seen in `train`; `test_unseen_voice` holds them spoken by
`{UNSEEN_VOICE.name}` ({_described(UNSEEN_VOICE)}), a speaker never heard in `train`.
Training voices: {voices}.

```python
from datasets import load_dataset
speech = load_dataset("{CARD_DATASET_PATH}", "speech")
```
"""


def build_corpus(output_dir: str | Path, config: CorpusConfig | None = None, force: bool = False) -> dict:
    """Synthesize the corpus into `output_dir` and return its manifest (also saved as manifest.json).

    A corpus already there from the same generator version, seed and sizes is reused unless
    `force`; a new one is written to a staging folder first, so a failed build never leaves half
    a corpus behind.
    """
    config = config or CorpusConfig()
    output_dir = Path(output_dir)
    existing = output_dir / "manifest.json"
    if existing.is_file() and not force:
        manifest = json.loads(existing.read_text())
        wanted = {"generator_version": GENERATOR_VERSION, "seed": config.seed,
                  "sizes": {k: list(v) for k, v in config.sizes.items()}}
        if all(manifest.get(k) == v for k, v in wanted.items()):
            print(f"corpus at {output_dir} is up to date (generator {GENERATOR_VERSION}, seed {config.seed})")
            return manifest
    started = time.perf_counter()
    plan = _plan(config)
    jobs = list(dict.fromkeys(
        value for splits in plan.values() for rows in splits.values() for row in rows
        for value in row.values() if isinstance(value, tuple)
    ))
    audio = _synthesize_all(jobs, config.workers)  # checks every voice (engine, speaker, settings) first

    staging = output_dir.with_name(output_dir.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    utterances, counts = [], {}
    datasets.disable_progress_bars()  # one bar per parquet file would drown the synthesis bar
    for name, splits in plan.items():
        counts[name] = {}
        for split, planned_rows in splits.items():
            rows = [_finalize(name, split, i, planned, audio) for i, planned in enumerate(planned_rows)]
            columns = list(rows[0])
            dataset = datasets.Dataset.from_dict(
                {c: [row[c] for row in rows] for c in columns}, features=_features(name, columns)
            )
            (staging / name).mkdir(parents=True, exist_ok=True)
            dataset.to_parquet(str(staging / name / f"{split}-00000-of-00001.parquet"))
            counts[name][split] = len(rows)
            utterances += [
                {"id": row["id"], "config": name, "split": split, "speaker": row["speaker"],
                 "text": planned["audio"][0], "duration": round(row["duration"], 4),
                 "clips": {column: {"text": value[0], **_voice_record(value[1])}
                           for column, value in planned.items() if isinstance(value, tuple)}}
                for row, planned in zip(rows, planned_rows)
            ]
    datasets.enable_progress_bars()
    hours = sum(duration for _, duration in audio.values()) / 3600
    manifest = {
        "generator_version": GENERATOR_VERSION,
        "engines": {engine: engine_version(engine) for engine in sorted({voice.engine for _, voice in jobs})},
        "seed": config.seed,
        "sizes": {name: list(split) for name, split in config.sizes.items()},
        "sampling_rate": SAMPLING_RATE,
        "configs": {name: {"tasks": list(CONFIG_TASKS[name]), "splits": counts[name]} for name in CONFIG_TASKS},
        "voices": {"train": [asdict(v) for v in TRAIN_VOICES], "style": [asdict(v) for v in STYLE_VOICES],
                   "unseen": asdict(UNSEEN_VOICE),
                   "translation": {k: [asdict(v) for v in vs] for k, vs in TRANSLATION_VOICES.items()}},
        "vocabulary_size": len(grammar.english_vocabulary()),
        "synthesized_clips": len(audio),
        "hours": round(hours, 4),
        "utterances": utterances,
    }
    (staging / "README.md").write_text(_dataset_card(config, counts, hours))
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    if output_dir.exists():
        shutil.rmtree(output_dir)
    staging.rename(output_dir)
    rows = sum(sum(split_counts.values()) for split_counts in counts.values())
    print(f"built {rows} rows ({len(audio)} clips, {hours:.2f} h of audio) in "
          f"{time.perf_counter() - started:.0f} s -> {output_dir}")
    return manifest


def corpus_folder(path_or_repo: str | Path) -> Path:
    """The local folder of a corpus: `path_or_repo` itself, or, for a Hub dataset id such as
    `user/dualspeechlm-corpus` (what `dualspeechlm-push` publishes), its snapshot in the Hub cache
    (downloaded once; `HF_ENDPOINT` / `HF_TOKEN` apply)."""
    path = Path(path_or_repo)
    if not path.exists() and not path.is_absolute() and len(path.parts) == 2 and not str(path).startswith("."):
        from huggingface_hub import snapshot_download

        try:
            return Path(snapshot_download(str(path_or_repo), repo_type="dataset"))
        except Exception as error:  # offline, no such repo, refused token: all end the same way
            raise FileNotFoundError(f"no corpus folder at {path}, and the Hub dataset {path_or_repo!r} could not be "
                                    f"fetched ({type(error).__name__}: {error}); build a corpus with "
                                    f"`dualspeechlm-data build --output-dir {path}`") from error
    if not (path / "README.md").is_file():
        raise FileNotFoundError(f"no corpus at {path}: build it with `dualspeechlm-data build --output-dir {path}`")
    return path


def load_corpus(path: str | Path, config: str = "speech") -> datasets.DatasetDict:
    """The built corpus' `config` as a DatasetDict with the four splits; `path` is a folder or a
    Hub dataset id (`corpus_folder`).

    Loads the parquet files by explicit `data_files`, whose cache key covers the files themselves:
    `load_dataset(folder, config)` keys its cache on the folder's *name* and the config name only,
    so two corpora in folders of the same name would silently share one cache.
    """
    if config not in CONFIG_TASKS:
        raise ValueError(f"unknown corpus config {config!r}; choose one of {sorted(CONFIG_TASKS)}")
    folder = corpus_folder(path)
    files = {split: str(folder / config / f"{split}-*.parquet") for split in SPLITS}
    return datasets.load_dataset("parquet", data_files=files)


def corpus_audio(path: str | Path, split: str, config: str = "speech", limit: int | None = None) -> dict[str, list]:
    """One split's `audio` (float32 `[samples]` arrays at 16 kHz), `text` and `speaker` lists
    (the first `limit` rows when given), decoded once with a progress bar."""
    rows = load_corpus(path, config)[split]
    if limit:
        rows = rows.select(range(min(limit, len(rows))))
    audio = [row["audio"].get_all_samples().data[0].numpy()
             for row in tqdm(rows, desc=f"decoding {split}", unit="utt")]
    # list(): datasets >= 5.2 returns a lazy Column, which has no `+` and no JSON form
    return {"audio": audio, "text": list(rows["text"]), "speaker": list(rows["speaker"])}
