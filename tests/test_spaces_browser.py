"""The Gradio Space in a real browser (Debian's Chromium driven by playwright): synthesize speech, transcribe an
upload, click an example of the test set (`dualspeechlm-space-examples` on the tiny corpus) and speak it, and open
the samples page's items beside the TTS tab.

Runs on a tiny random model folder, or on the model named by DUALSPEECHLM_MODEL when set. With
DUALSPEECHLM_SCREENSHOT=path a screenshot of the page is saved there (docs/space.png is made this way).
"""

import io
import os
import re

import pytest
import soundfile

from dualspeechlm.processing.corpus import TRAIN_VOICES, synthesize
from dualspeechlm.publishing.space_examples import write_space_examples

from chromium import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS, require_chromium
from test_processing_dualspeechlm import TEXTS
from test_space_examples import samples_page
from test_spaces_demo import launch, load_app, tiny_model_folder

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting'", "ignore:The copy keyword")]


def test_synthesize_transcribe_and_click_an_example_in_chromium(espeak, tiny_corpus, tmp_path):
    sync_playwright = require_chromium()
    from playwright.sync_api import expect

    wav = tmp_path / "speech.wav"
    soundfile.write(wav, synthesize(TEXTS[0], TRAIN_VOICES[0]), 16000)
    examples = write_space_examples(tiny_corpus, tmp_path / "examples", per_tab=1,
                                    samples_dir=samples_page(tmp_path / "samples"))
    demo = load_app().build_demo(os.environ.get("DUALSPEECHLM_MODEL") or tiny_model_folder(tmp_path / "model"),
                                 examples_dir=tmp_path / "examples")
    url = launch(demo)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.set_default_timeout(TIMEOUT_MS)
            expect.set_options(timeout=TIMEOUT_MS)
            page.goto(url)

            page.get_by_role("tab", name="Speech recognition").click()
            page.locator("#asr-input input[type=file]").set_input_files(wav)
            page.get_by_role("button", name="Transcribe").click()
            expect(page.locator("#asr-output textarea")).not_to_have_value("")

            page.get_by_role("tab", name="Text to speech").click()
            page.locator("#tts-input textarea").fill("anna saw the cat")
            page.get_by_role("button", name="Synthesize").click()
            link = page.locator("#tts-output a[data-testid=download-link]")  # the player's download button
            expect(link).to_have_attribute("href", re.compile(r"\.wav$"))
            expect(page.locator("#tts-output [data-testid=waveform-controls]")).to_be_visible()  # the player
            audio, _ = soundfile.read(io.BytesIO(page.request.get(link.get_attribute("href")).body()))
            assert len(audio) > 0
            expect(page.locator(".toast-body")).to_have_count(0)  # no error popped up

            # what the model knows, then an example of the test set: its text fills the box, and it speaks
            expect(page.get_by_text("What this model knows.")).to_be_visible()
            page.get_by_role("tab", name="Text to speech").click()
            page.locator("#tts-input textarea").fill("")
            page.locator("#tts-examples").get_by_text(examples["examples"]["tts"][0][0]).first.click()
            expect(page.locator("#tts-input textarea")).to_have_value(examples["examples"]["tts"][0][0])
            page.get_by_role("button", name="Synthesize").click()
            expect(link).to_have_attribute("href", re.compile(r"\.wav$"))
            expect(page.locator(".toast-body")).to_have_count(0)

            # how it speaks on its test set: the samples page's pictures and recordings, in a closed accordion
            page.locator("#tts-heard").get_by_text("How it speaks on its test set").click()
            pictures = page.locator("#tts-heard img")
            expect(pictures).to_have_count(len(examples["heard"]["tts"]))
            page.wait_for_function("[...document.querySelectorAll('#tts-heard img')].every(i => i.complete && "
                                   "i.naturalWidth > 0)")
            words = examples["heard"]["tts"][0]["caption"].split("*")[1]  # the caption's sentence, in italics
            expect(page.locator("#tts-heard").get_by_text(words).first).to_be_visible()

            if screenshot := os.environ.get("DUALSPEECHLM_SCREENSHOT"):
                page.screenshot(path=screenshot, full_page=True)
            browser.close()
    finally:
        demo.close()
