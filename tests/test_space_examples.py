"""dualspeechlm-space-examples: the Space's examples from the corpus' test splits, with a few items of the model's
samples page beside the TTS and VC tabs, and the Space showing them."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile

from dualspeechlm.publishing.space_examples import HEARD_TABS, main, write_space_examples
from dualspeechlm.training.samples import log_mel_picture

from test_spaces_demo import load_app, tiny_model_folder

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting'", "ignore:The copy keyword")]


def samples_page(folder: Path) -> Path:
    """A samples page as `dualspeechlm-samples` writes one (its samples.json and files) for TTS and VC on both splits:
    one item each, the unseen voice's VC item without written speech."""
    folder.mkdir()
    tone = (0.3 * np.sin(np.arange(8000) / 16000 * 2 * np.pi * 220)).astype(np.float32)
    splits = {}
    for split in ("test", "test_unseen_voice"):
        for task in HEARD_TABS:
            silent = split == "test_unseen_voice" and task == "vc"
            files = {"reference": f"{split}-{task}-0-reference.wav", "log_mel": f"{split}-{task}-0-log-mel.png"}
            soundfile.write(folder / files["reference"], tone, 16000)
            if not silent:
                files["generated"] = f"{split}-{task}-0-generated.wav"
                soundfile.write(folder / files["generated"], tone[:6000], 16000)
            log_mel_picture(None if silent else tone[:6000], tone, folder / files["log_mel"])
            splits.setdefault(split, {})[task] = [{
                "task": task, "split": split, "reference": f"anna saw the {task}", "files": files, "voice": "kal",
                "sim": None if silent else 0.83,
                "transcripts": {"whisper": {"generated": "" if silent else "anna saw a cat", "reference": "x"}}}]
    (folder / "samples.json").write_text(json.dumps({"model": "m", "about": "", "splits": splits}))
    return folder


def test_heard_items_come_from_the_samples_page(tiny_corpus, tmp_path):
    page = samples_page(tmp_path / "samples")
    content = write_space_examples(tiny_corpus, tmp_path / "examples", per_tab=1, samples_dir=page)
    assert content == json.loads((tmp_path / "examples" / "examples.json").read_text())
    assert set(content["heard"]) == set(HEARD_TABS)
    seen, unseen = content["heard"]["vc"]
    assert set(seen) == {"caption", "log_mel", "generated", "reference"} and set(unseen) == {"caption", "log_mel",
                                                                                             "reference"}
    assert seen["caption"] == ("Test split of voices heard in training, spoken in voice `kal`: *anna saw the vc*. "
                               "SIM 0.83 to the reference voice; Whisper heard *anna saw a cat*.")
    assert unseen["caption"].startswith("Test split of a voice never heard in training")
    assert "no speech written" in unseen["caption"]
    for items in content["heard"].values():
        for item in items:
            for role in item.keys() - {"caption"}:
                assert (tmp_path / "examples" / item[role]).read_bytes() == (page / item[role]).read_bytes()


def test_a_missing_samples_page_is_refused_and_the_examples_are_kept(tiny_corpus, tmp_path):
    write_space_examples(tiny_corpus, tmp_path / "examples", per_tab=1)
    before = sorted(path.name for path in (tmp_path / "examples").iterdir())
    with pytest.raises(SystemExit, match=r"no samples.json in .*nowhere: `dualspeechlm-samples` \(make samples\)"):
        main(["--corpus", str(tiny_corpus), "--output-dir", str(tmp_path / "examples"), "--samples",
              str(tmp_path / "nowhere")])
    assert sorted(path.name for path in (tmp_path / "examples").iterdir()) == before


def test_the_space_shows_the_heard_items_beside_its_tabs(tiny_corpus, tmp_path):
    content = write_space_examples(tiny_corpus, tmp_path / "examples", per_tab=1,
                                   samples_dir=samples_page(tmp_path / "samples"))
    demo = load_app().build_demo(tiny_model_folder(tmp_path / "model"), examples_dir=tmp_path / "examples")
    try:
        config = demo.get_config_file()
    finally:
        demo.close()
    components = {component["id"]: component for component in config["components"]}
    accordions = {component["props"].get("elem_id"): component["id"] for component in components.values()
                  if component["type"] == "accordion"}
    assert {f"{tab}-heard" for tab in HEARD_TABS} <= set(accordions)

    def inside(parent: int, layout: dict) -> list[dict]:
        """The components under the layout node of `parent`."""
        if layout["id"] == parent:
            found, stack = [], list(layout.get("children", []))
            while stack:
                node = stack.pop()
                found.append(components[node["id"]])
                stack += node.get("children", [])
            return found
        return [c for child in layout.get("children", []) for c in inside(parent, child)]

    for tab in HEARD_TABS:
        shown = inside(accordions[f"{tab}-heard"], config["layout"])
        captions = [c["props"]["value"] for c in shown if c["type"] == "markdown"]
        assert sorted(captions) == sorted(item["caption"] for item in content["heard"][tab])
        files = [Path(c["props"]["value"]["path"]).name for c in shown if c["type"] in ("image", "audio")]
        assert sorted(files) == sorted(item[role] for item in content["heard"][tab] for role in item
                                       if role != "caption")
