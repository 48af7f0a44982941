"""Model card templates (Jinja, rendered by `huggingface_hub.ModelCard.from_template`)."""

from pathlib import Path

TEMPLATE_DIR = Path(__file__).parent
DUALSPEECHLM_TEMPLATE = TEMPLATE_DIR / "dualspeechlm.md"
