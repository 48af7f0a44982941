"""The corpus' speakers and speaking styles.

Ten English voices speak the training data; one more, whose accent-variant pairing never occurs
in training, speaks the `test_unseen_voice` split. Spanish and French voices speak translations.
"""

from __future__ import annotations

from .espeak import Voice

TRAIN_VOICES = (
    Voice("us_m1", "en-us", "m1", 165, 45),
    Voice("us_f2", "en-us", "f2", 175, 62),
    Voice("gb_m3", "en-gb", "m3", 155, 40),
    Voice("rp_f1", "en-gb-x-rp", "f1", 170, 56),
    Voice("scot_m2", "en-gb-scotland", "m2", 160, 48),
    Voice("lanc_f3", "en-gb-x-gbclan", "f3", 180, 66),
    Voice("wmid_m4", "en-gb-x-gbcwmd", "m4", 150, 35),
    Voice("nyc_f4", "en-us-nyc", "f4", 170, 58),
    Voice("carib_m5", "en-029", "m5", 160, 42),
    Voice("us_klatt", "en-us", "klatt", 170, 50),
)
UNSEEN_VOICE = Voice("scot_f5", "en-gb-scotland", "f5", 168, 60)

TRANSLATION_VOICES = {
    "es": (Voice("es_m1", "es", "m1", 160, 50), Voice("latam_f2", "es-419", "f2", 165, 60)),
    "fr": (Voice("fr_m3", "fr-fr", "m3", 160, 45), Voice("be_f1", "fr-be", "f1", 165, 58)),
}

# Speaking styles (the SER analogue): each is a change the audio really carries, far outside the
# range of the voices' own rates (150..180 wpm) and pitches (35..66).
STYLE_DESCRIPTIONS = {
    "normal": "the speaker talks in a normal voice",
    "fast": "the speaker talks fast",
    "slow": "the speaker talks slowly",
    "high pitch": "the speaker talks with a high pitch",
    "low pitch": "the speaker talks with a low pitch",
    "whisper": "the speaker whispers",
}


def styled(voice: Voice, style: str) -> Voice:
    """`voice` speaking in `style` (one of STYLE_DESCRIPTIONS)."""
    if style == "normal":
        return voice
    if style == "fast":
        return voice.with_style(rate=290)
    if style == "slow":
        return voice.with_style(rate=95)
    if style == "high pitch":
        return voice.with_style(pitch=95)
    if style == "low pitch":
        return voice.with_style(pitch=5)
    if style == "whisper":  # espeak-ng has a female and a male whisper
        return voice.with_style(variant="whisperf" if voice.variant.startswith("f") else "whisper")
    raise ValueError(f"unknown style {style!r}; use one of {sorted(STYLE_DESCRIPTIONS)}")
