"""Load Hub speech datasets (LibriSpeech, LibriTTS, ...) onto the corpus's "speech" schema.

Every split returned by :func:`load_speech_dataset` has exactly these columns, in this order::

    id        str    unique utterance id (the source's id, or "<split>-000000", ... when it has none)
    audio     Audio(sampling_rate=16000, num_channels=1)   decoded lazily, resampled and downmixed
    text      str    transcript, whitespace-trimmed (lowercased where the layout asks)
    speaker   str    speaker id cast to str
    language  str    the layout's language code, e.g. "en"

Resampling and downmixing are done by torchcodec/ffmpeg at decode time (``Audio(sampling_rate=...,
num_channels=1)``); nothing is rewritten on disk. ffmpeg downmixes stereo as (L + R) / sqrt(2), not
as a mean, so identical channels come out 3 dB louder (and may exceed 1.0). Pass ``mono=False`` to
keep the source channels (feature ``Audio(sampling_rate=16000)``) and mix them yourself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import datasets
import httpx2
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Audio, Dataset, DatasetDict, Features, IterableDataset, IterableDatasetDict, Value
from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES
from huggingface_hub import constants as hub_constants
from huggingface_hub.errors import OfflineModeIsEnabled
from huggingface_hub.utils import get_session

SPEECH_COLUMNS = ("id", "audio", "text", "speaker", "language")
HUB_PROBE_TIMEOUT_S = 5.0


class HubUnavailableError(ConnectionError):
    """The Hugging Face Hub could not be reached (offline mode or no network) for a Hub dataset id."""


@dataclass(frozen=True)
class SpeechLayout:
    """Where a source dataset keeps the fields of the speech schema.

    ``audio``/``text``/``speaker``/``id`` name source columns (``id=None``: synthesise ids);
    every other source column is dropped. ``language`` fills the constant ``language`` column.
    """

    audio: str = "audio"
    text: str = "text"
    speaker: str = "speaker_id"
    id: str | None = "id"
    language: str = "en"
    lowercase: bool = False

    def __post_init__(self):
        sources = [c for c in (self.audio, self.text, self.speaker, self.id) if c is not None]
        if len(set(sources)) != len(sources):
            raise ValueError(f"a source column may feed only one schema column, got {sources}")


LAYOUTS: dict[str, SpeechLayout] = {
    # openslr/librispeech_asr: file, audio, text, speaker_id, chapter_id, id. Upper-case transcripts.
    "librispeech": SpeechLayout(text="text", lowercase=True),
    # mythicinfinity/libritts, mythicinfinity/libritts_r, parler-tts/libritts_r_filtered:
    # audio, text_normalized, text_original, speaker_id, path, chapter_id, id (24 kHz, cased text).
    "libritts": SpeechLayout(text="text_normalized"),
}


def _hub_unavailable(repo: str, offline: bool, detail: str = "") -> HubUnavailableError:
    reason = "offline mode is enabled (HF_HUB_OFFLINE=1)" if offline else f"network unreachable: {detail}"
    cache_hint = "" if offline else " If it is already in your Hugging Face cache, set HF_HUB_OFFLINE=1 to use it."
    return HubUnavailableError(
        f"Could not reach the Hugging Face Hub for dataset '{repo}': {reason}. Where the Hub is reachable, "
        f"download it (`load_dataset('{repo}', ...).save_to_disk(DIR)`, or `hf download {repo} --repo-type dataset "
        f"--local-dir DIR`), copy DIR here and pass that local path (there is no local folder '{repo}' either)."
        + cache_hint
    )


def _check_hub_reachable(repo: str) -> None:
    """Fail fast instead of letting huggingface_hub retry an unreachable host for ~30 s."""
    if datasets.config.HF_HUB_OFFLINE or hub_constants.is_offline_mode():
        return  # load_dataset then serves the cache or fails at once; its ConnectionError is mapped
    try:
        get_session().head(datasets.config.HF_ENDPOINT, timeout=HUB_PROBE_TIMEOUT_S)
    except (httpx2.TransportError, OfflineModeIsEnabled) as err:
        raise _hub_unavailable(repo, False, f"{type(err).__name__}: {err}") from err


def _is_hub_id(path: str) -> bool:
    if path.startswith("hf://"):
        return True
    return not (os.path.isabs(path) or path.startswith((".", "~")) or path.count("/") > 1 or "\\" in path)


def _schema_columns(table: pa.Table, layout: SpeechLayout, offset: int, prefix: str) -> dict[str, pa.Array]:
    """The four non-audio schema columns computed from the source columns of ``table``."""
    text = pc.utf8_trim_whitespace(pc.cast(table.column(layout.text), pa.string()))
    n = table.num_rows
    ids = (
        pc.cast(table.column(layout.id), pa.string())
        if layout.id
        else pa.array([f"{prefix}{i:06d}" for i in range(offset, offset + n)], pa.string())
    )
    return {
        "id": ids,
        "text": pc.utf8_lower(text) if layout.lowercase else text,
        "speaker": pc.cast(table.column(layout.speaker), pa.string()),
        "language": pa.array([layout.language] * n, pa.string()),
    }


def _to_schema(ds, layout: SpeechLayout, split: str | None, features: Features):
    columns = ds.column_names or list(next(iter(ds)))  # streaming sources may not declare columns
    labels = [c for c in (layout.text, layout.speaker, layout.id) if c]
    wanted = [layout.audio, *labels]
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise ValueError(f"dataset lacks column(s) {missing} required by {layout}; its columns are {columns}")
    ds = ds.select_columns(wanted)
    prefix = f"{split}-" if split else ""
    if isinstance(ds, IterableDataset):

        def convert(batch: pa.Table, indices: list[int]) -> pa.Table:
            cols = _schema_columns(batch, layout, indices[0] if indices else 0, prefix)
            cols["audio"] = batch.column(layout.audio)
            return pa.table({c: cols[c] for c in SPEECH_COLUMNS})

        ds = ds.with_format("arrow").map(convert, batched=True, with_indices=True)  # output replaces input
        return ds.with_format(None).cast(features)
    # Map-style: swap whole Arrow columns, so the (large) audio data is never copied or rewritten.
    cols = _schema_columns(ds.select_columns(labels).with_format("arrow")[:], layout, 0, prefix)
    ds = ds.remove_columns(labels)
    if layout.audio != "audio":
        ds = ds.rename_column(layout.audio, "audio")
    for name, values in cols.items():
        ds = ds.add_column(name, values, feature=Value("string"))
    return ds.select_columns(list(SPEECH_COLUMNS)).cast_column("audio", features["audio"])


def _load_saved(path: str, split: str | None, streaming: bool):
    """A folder written by ``save_to_disk`` (``load_dataset`` cannot read those)."""
    ds = datasets.load_from_disk(path)
    if split is not None and isinstance(ds, DatasetDict):
        if split not in ds:
            raise ValueError(f"split {split!r} not in {path}; it has {list(ds)}")
        ds = ds[split]
    if streaming and isinstance(ds, DatasetDict):
        return IterableDatasetDict({k: v.to_iterable_dataset() for k, v in ds.items()})
    return ds.to_iterable_dataset() if streaming else ds


def load_speech_dataset(
    path_or_repo: str,
    layout: str | SpeechLayout = "librispeech",
    split: str | None = None,
    name: str | None = None,
    sampling_rate: int = 16000,
    streaming: bool = False,
    mono: bool = True,
    **load_dataset_kwargs,
) -> Dataset | DatasetDict | IterableDataset | IterableDatasetDict:
    """Load a Hub dataset id, a local data folder or a ``save_to_disk`` folder in the speech schema.

    ``layout`` is a :class:`SpeechLayout` or a key of :data:`LAYOUTS`. ``split``/``name``/``streaming``
    and ``load_dataset_kwargs`` go to :func:`datasets.load_dataset` (a ``save_to_disk`` folder is read
    with :func:`datasets.load_from_disk`). Raises :class:`HubUnavailableError` when a Hub id cannot be
    fetched, ``FileNotFoundError`` for a missing local path, ``ValueError`` for missing columns.
    """
    layout = LAYOUTS[layout] if isinstance(layout, str) else layout
    features = Features({c: Value("string") for c in SPEECH_COLUMNS})
    features["audio"] = Audio(sampling_rate=sampling_rate, num_channels=1 if mono else None)
    path = os.path.expanduser(str(path_or_repo))
    if os.path.isfile(os.path.join(path, "state.json")) or os.path.isfile(os.path.join(path, "dataset_dict.json")):
        ds = _load_saved(path, split, streaming)
    elif os.path.exists(path) or path in _PACKAGED_DATASETS_MODULES:
        ds = datasets.load_dataset(path, name, split=split, streaming=streaming, **load_dataset_kwargs)
    elif not _is_hub_id(path):
        raise FileNotFoundError(f"No local dataset at {os.path.abspath(path)!r} (and it is not a Hub dataset id).")
    else:
        _check_hub_reachable(path)
        try:
            ds = datasets.load_dataset(path, name, split=split, streaming=streaming, **load_dataset_kwargs)
        except ConnectionError as err:
            offline = datasets.config.HF_HUB_OFFLINE or hub_constants.is_offline_mode()
            raise _hub_unavailable(path, offline, str(err)) from err
    if isinstance(ds, (DatasetDict, IterableDatasetDict)):
        return type(ds)({k: _to_schema(v, layout, k, features) for k, v in ds.items()})
    return _to_schema(ds, layout, split, features)
