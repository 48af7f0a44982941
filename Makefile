# The two commands of the README's Quickstart: `make quickstart` and `make test`.
VENV ?= .venv
BIN := $(VENV)/bin
CORPUS ?= data/corpus
CACHE ?= data/encoder_cache
MODELS ?= models
WHISPER ?= $(MODELS)/whisper-tiny.en
RESULTS ?= results
# The Hub is unreachable here and everything runs from local files; `make ... HF_HUB_OFFLINE=0`
# lets transformers and datasets reach it where a network exists.
export HF_HUB_OFFLINE ?= 1
# Two cores: the independent stages run side by side on one thread each (`-j2`), which beats one
# job on two threads for these small models; stages 1 and 3 take the second core when it falls idle
# (`--use-idle-cores`).
export OMP_NUM_THREADS ?= 1

.PHONY: setup quickstart stages corpus whisper baseline encoder-cache text-llm codec codec-decoder speaker-encoder \
	ustokenizer dualspeechlm evaluation samples space-examples ablations performance test test-slow clean

setup: $(VENV)/.installed

$(VENV)/.installed: setup.py scripts/setup.sh
	bash scripts/setup.sh
	touch $@

# The main job on the embedded default: corpus, Whisper, the judges' baseline, then every training
# stage (codec, speaker encoder and USTokenizer in parallel, then DualSpeechLM beside the codec's
# USToken-reading decoder) and the evaluation of the model with that decoder.
quickstart: setup
	$(MAKE) -j2 stages

# Prerequisites are listed longest first: with -j2, stage 1's two inputs (the text LLM and the encoder cache of its
# audio) are made side by side as soon as the corpus and Whisper exist, then stage 1 (the longest) beside the codec,
# then the speaker encoder, stage 3 beside the decoder, the judges' baseline and the evaluation.
stages: evaluation baseline

# GNU make -j2 starts whatever side job is ready when stage 1's inputs are done (the speaker encoder, then the
# judges' baseline came first, both before stage 1): in the main job the speaker encoder waits for the codec and
# the baseline for stage 3, so that stage 1 starts as soon as it can and the short jobs fill the gaps at the end.
ifeq ($(MAKECMDGOALS),stages)
$(MODELS)/speaker-encoder/config.json: | $(MODELS)/mel-codec/config.json
baseline: | $(MODELS)/dualspeechlm/config.json
endif

corpus: setup
	$(BIN)/dualspeechlm-data build --output-dir $(CORPUS)

whisper: setup
	$(BIN)/dualspeechlm-convert-whisper --output-dir $(WHISPER)

baseline: corpus whisper
	$(BIN)/dualspeechlm-judge --corpus $(CORPUS) --whisper $(WHISPER) --output-dir $(RESULTS)/judge_baseline

# The frozen Whisper encoder's outputs for stage 1's audio (the later stages cache the rest as they need it); a
# cache that matches the corpus and the encoder is kept, so this is quick once made.
encoder-cache: corpus whisper
	$(BIN)/dualspeechlm-cache-encoder --corpus $(CORPUS) --whisper $(WHISPER) --cache-dir $(CACHE) \
		--configs speech style qa --columns audio

# Each training stage is a file target: it reruns only when its model folder is missing.
text-llm: $(MODELS)/ustokenizer/text_llm/config.json
codec: $(MODELS)/mel-codec/config.json
codec-decoder: $(MODELS)/mel-codec-ustokens/config.json
speaker-encoder: $(MODELS)/speaker-encoder/config.json
ustokenizer: $(MODELS)/ustokenizer/config.json
dualspeechlm: $(MODELS)/dualspeechlm/config.json
evaluation: $(MODELS)/dualspeechlm/evaluation.json

$(MODELS)/mel-codec/config.json: | corpus whisper
	$(BIN)/dualspeechlm-train-codec --corpus $(CORPUS) --whisper $(WHISPER) --output-dir $(MODELS)/mel-codec

# the codec's decoder taught to read stage 1's USTokens and the speaker embedding (same codes: it needs stage 1,
# the codec and the speaker encoder)
$(MODELS)/mel-codec-ustokens/config.json: $(MODELS)/mel-codec/config.json $(MODELS)/ustokenizer/config.json \
		$(MODELS)/speaker-encoder/config.json
	$(BIN)/dualspeechlm-train-codec-decoder --codec $(MODELS)/mel-codec --ustokenizer $(MODELS)/ustokenizer \
		--speaker-encoder $(MODELS)/speaker-encoder --corpus $(CORPUS) --cache-dir $(CACHE) --whisper $(WHISPER) \
		--output-dir $(MODELS)/mel-codec-ustokens

$(MODELS)/speaker-encoder/config.json: | corpus
	$(BIN)/dualspeechlm-train-speaker-encoder --corpus $(CORPUS) --output-dir $(MODELS)/speaker-encoder

# stage 1's small text LLM (trained on the corpus' text), which stage 1 then trains along with the tokenizer
$(MODELS)/ustokenizer/text_llm/config.json: | corpus
	$(BIN)/dualspeechlm-train-ustokenizer --corpus $(CORPUS) --output-dir $(MODELS)/ustokenizer --text-llm-only

$(MODELS)/ustokenizer/config.json: $(MODELS)/ustokenizer/text_llm/config.json | encoder-cache
	$(BIN)/dualspeechlm-train-ustokenizer --corpus $(CORPUS) --whisper $(WHISPER) --cache-dir $(CACHE) \
		--output-dir $(MODELS)/ustokenizer --use-idle-cores

# Stage 3 takes the plain codec (its codes, which the USToken-reading decoder keeps: same encoder and codebooks; the
# tiny preset, which leaves AcousticGPT untrained, caches none), so the two train side by side; the model speaks
# through that decoder, which it gets before it is evaluated.
$(MODELS)/dualspeechlm/config.json: $(MODELS)/ustokenizer/config.json $(MODELS)/mel-codec/config.json \
		$(MODELS)/speaker-encoder/config.json
	$(BIN)/dualspeechlm-train-dualspeechlm --corpus $(CORPUS) --ustokenizer $(MODELS)/ustokenizer \
		--codec $(MODELS)/mel-codec --speaker-encoder $(MODELS)/speaker-encoder --cache-dir $(CACHE) \
		--output-dir $(MODELS)/dualspeechlm --skip-evaluation --use-idle-cores

# Nothing else runs by then: the evaluation takes both cores.
$(MODELS)/dualspeechlm/evaluation.json: $(MODELS)/dualspeechlm/config.json $(MODELS)/mel-codec-ustokens/config.json
	$(BIN)/dualspeechlm-set-codec --model $(MODELS)/dualspeechlm --codec $(MODELS)/mel-codec-ustokens
	OMP_NUM_THREADS=2 $(BIN)/dualspeechlm-evaluate --model $(MODELS)/dualspeechlm --corpus $(CORPUS) --cache-dir $(CACHE) \
		--whisper $(WHISPER)

# After the main job: the samples page (docs/samples) and the Space's examples (spaces_demo/examples).
samples: $(MODELS)/dualspeechlm/evaluation.json
	$(BIN)/dualspeechlm-samples --model $(MODELS)/dualspeechlm --corpus $(CORPUS) --cache-dir $(CACHE) \
		--whisper $(WHISPER) --output-dir docs/samples

# The paper's baselines and ablations under one short recipe (training/presets/ablations_tiny.yaml), on the main
# job's parts, one row at a time on both cores: docs/ABLATIONS.md. A stopped run continues where it stopped;
# `ROWS="..."` picks rows.
ablations: corpus whisper encoder-cache codec speaker-encoder text-llm
	OMP_NUM_THREADS=2 $(BIN)/dualspeechlm-ablate --corpus $(CORPUS) --whisper $(WHISPER) --cache-dir $(CACHE) \
		--codec $(MODELS)/mel-codec --speaker-encoder $(MODELS)/speaker-encoder \
		--text-llm $(MODELS)/ustokenizer/text_llm --main-job $(MODELS)/dualspeechlm --work-dir $(MODELS)/ablations \
		$(if $(ROWS),--rows $(ROWS))

# The Space's examples, with a few items of the samples page (docs/samples, `make samples`) beside its TTS and VC tabs.
space-examples: corpus
	$(BIN)/dualspeechlm-space-examples --corpus $(CORPUS) --output-dir spaces_demo/examples --samples docs/samples

# After the main job: the performance page (docs/PERFORMANCE.md + docs/performance.json) on its folders, every figure
# a ratio measured side by side on this machine. It makes none of them: a missing one stops it with the target to run.
performance: setup
	$(BIN)/python -m bench.performance --model $(MODELS)/dualspeechlm --corpus $(CORPUS) --cache-dir $(CACHE) \
		--whisper $(WHISPER) --ustokenizer $(MODELS)/ustokenizer --codec $(MODELS)/mel-codec \
		--speaker-encoder $(MODELS)/speaker-encoder

test: setup
	$(BIN)/python -m pytest -m "not slow" -q -rs

test-slow: setup
	$(BIN)/python -m pytest -m slow -q

clean:
	rm -rf $(CORPUS) $(CORPUS).partial $(CACHE) $(WHISPER) $(RESULTS) $(MODELS)/mel-codec $(MODELS)/mel-codec-ustokens $(MODELS)/speaker-encoder \
		$(MODELS)/ustokenizer $(MODELS)/dualspeechlm
