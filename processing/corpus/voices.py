"""The corpus' speakers and speaking styles.

English is spoken by voices built from real recordings (CMU ARCTIC): flite's `awb`, `rms` and `slt` and
festival's HTS `slt`, and `rms` once more at a brisker rate. The `test_unseen_voice` split is spoken
by flite's `kal16`, a diphone voice of another real speaker (KAL) that no training split uses, so it measures
how a model meets a new speaker rather than a new setting of a known one. Spanish and French translations are
spoken by espeak-ng, the one installed engine with those languages.
"""

from __future__ import annotations

from .synthesis import Voice

TRAIN_VOICES = (
    Voice("awb", "flite", "awb", rate=0.9),  # a little slower than its own: it speaks fast
    Voice("rms", "flite", "rms"),
    Voice("slt", "flite", "slt"),
    Voice("slt_hts", "festival", "cmu_us_slt_arctic_hts"),
    Voice("rms_brisk", "flite", "rms", rate=1.1),
)
UNSEEN_VOICE = Voice("kal", "flite", "kal16")

# The style task needs voices whose rate and pitch can both be changed (flite's `rms` keeps its own pitch).
STYLE_VOICES = (Voice("awb", "flite", "awb"), Voice("slt", "flite", "slt"))

TRANSLATION_VOICES = {
    "es": (Voice("es_m1", "espeak-ng", "es+m1", rate=160 / 175),
           Voice("latam_f2", "espeak-ng", "es-419+f2", rate=165 / 175, pitch=1.2)),
    "fr": (Voice("fr_m3", "espeak-ng", "fr-fr+m3", rate=160 / 175, pitch=0.9),
           Voice("be_f1", "espeak-ng", "fr-be+f1", rate=165 / 175, pitch=1.16)),
}

# Speaking styles (the SER analogue): each is a change the audio really carries, far outside the
# range of the training voices' own rates (0.9..1.1) and pitches (their own).
STYLE_DESCRIPTIONS = {
    "normal": "the speaker talks in a normal voice",
    "fast": "the speaker talks fast",
    "slow": "the speaker talks slowly",
    "high pitch": "the speaker talks with a high pitch",
    "low pitch": "the speaker talks with a low pitch",
    "whisper": "the speaker whispers",
}
_STYLE_SETTINGS = {
    "normal": {},
    "fast": {"rate": 1.6},
    "slow": {"rate": 0.6},
    "high pitch": {"pitch": 1.5},
    "low pitch": {"pitch": 0.6},
    "whisper": {"whisper": True},
}


def styled(voice: Voice, style: str) -> Voice:
    """`voice` speaking in `style` (one of STYLE_DESCRIPTIONS)."""
    if style not in _STYLE_SETTINGS:
        raise ValueError(f"unknown style {style!r}; use one of {sorted(STYLE_DESCRIPTIONS)}")
    return voice.with_style(**_STYLE_SETTINGS[style])
