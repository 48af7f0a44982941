"""Turning raw data into model inputs and back: features, prompts, the corpus, Hub data."""
