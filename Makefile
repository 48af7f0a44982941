# The two commands of the README's Quickstart: `make quickstart` and `make test`.
VENV ?= .venv
BIN := $(VENV)/bin
CORPUS ?= data/corpus
WHISPER ?= models/whisper-tiny.en
RESULTS ?= results
# The Hub is unreachable here and everything runs from local files; `make ... HF_HUB_OFFLINE=0`
# lets transformers and datasets reach it where a network exists.
export HF_HUB_OFFLINE ?= 1

.PHONY: setup quickstart corpus whisper baseline test test-slow clean

setup: $(VENV)/.installed

$(VENV)/.installed: setup.py scripts/setup.sh
	bash scripts/setup.sh
	touch $@

# The main job on the embedded default: build the corpus, convert Whisper tiny.en, and measure
# the judges on the reference audio (the baseline every TTS result is compared with).
quickstart: setup corpus whisper baseline

corpus: setup
	$(BIN)/dualspeechlm-data build --output-dir $(CORPUS)

whisper: setup
	$(BIN)/dualspeechlm-convert-whisper --output-dir $(WHISPER)

baseline: setup
	$(BIN)/dualspeechlm-judge --corpus $(CORPUS) --whisper $(WHISPER) --output-dir $(RESULTS)/judge_baseline

test: setup
	$(BIN)/python -m pytest -m "not slow" -q

test-slow: setup
	$(BIN)/python -m pytest -m slow -q

clean:
	rm -rf $(CORPUS) $(CORPUS).partial $(WHISPER) $(RESULTS)
