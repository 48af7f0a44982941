"""The Gradio Space: `app.py`, its README (Space YAML) and requirements, staged by `dualspeechlm-push`."""

from pathlib import Path

SPACE_DIR = Path(__file__).parent
