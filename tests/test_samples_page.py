"""The samples page checked into docs/samples (`make samples` after the main job): complete, small, exactly what
`dualspeechlm-samples` writes from its samples.json, and every player and picture loads in Chromium."""

import json
from pathlib import Path

import pytest

from dualspeechlm.tasks import TASKS, get_task
from dualspeechlm.training.samples import html_page, markdown_page

from chromium import check_samples_page, markdown_links

PAGE = Path(__file__).resolve().parents[1] / "docs" / "samples"
MAX_BYTES = 8e6  # a few MB: the page lives in the repository


@pytest.fixture(scope="module")
def samples():
    if not (PAGE / "samples.json").is_file():
        pytest.fail(f"{PAGE} holds no samples.json: `make samples` writes the page after the main job")
    return json.loads((PAGE / "samples.json").read_text())


def test_every_task_and_split_has_its_files(samples):
    assert list(samples["splits"]) == ["test", "test_unseen_voice"]
    for split, tasks in samples["splits"].items():
        assert set(tasks) == set(TASKS)
        for task, items in tasks.items():
            assert items, (split, task)
            for item in items:
                assert all((PAGE / name).is_file() for name in item["files"].values()), (split, task)
                if get_task(task).speech_output:
                    assert {"reference", "log_mel"} <= set(item["files"]) and item["voice"]
                else:
                    assert "input" in item["files"] and isinstance(item["answer"], str) and item["reference"]
    assert sum(path.stat().st_size for path in PAGE.iterdir()) < MAX_BYTES


def test_pages_are_the_commands_output(samples):
    """README.md and index.html are what the writer makes of samples.json: nothing was edited by hand."""
    assert (PAGE / "README.md").read_text() == markdown_page(samples) + "\n"
    assert (PAGE / "index.html").read_text() == html_page(samples)
    linked = markdown_links(PAGE / "README.md")
    assert all((PAGE / name).is_file() for name in linked)
    files = {path.name for path in PAGE.iterdir()} - {"README.md", "index.html", "samples.json"}
    assert files == linked, files ^ linked  # no stray file


def test_every_player_and_picture_loads_in_chromium(samples):
    pictures = sum("log_mel" in item["files"] for tasks in samples["splits"].values() for items in tasks.values()
                   for item in items)
    players, shown = check_samples_page(PAGE)
    assert shown == pictures and players > pictures
