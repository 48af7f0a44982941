"""docs/PERFORMANCE.md from the results `bench/performance.py` measures: `performance_page(results) -> str`, pure.

`results`: `command` (the command line that measured them), `machine` (`cpu`, `cores`, `torch`, `gpu` or None,
`date`, `commit` or None), `settings` (`threads`, `clock`, `repeats`, `split`), `folders` (the folder of each
option: `model`, `corpus`, `whisper`, `ustokenizer`, `codec`, `speaker_encoder`, `cache_dir`) and `sections`
({name: the dict its measurement returned}, in the order measured; any subset of `SECTION_TITLES`).
"""

from bench.bench_codec import codec_table
from bench.bench_generation import generation_table
from bench.bench_ustokenizer import ustokenizer_table
from bench.common import significant
from bench.performance_speech import asr_table
from bench.performance_training import training_table

SECTION_TITLES = {"asr": "Speech recognition (ASR)", "tts": "Text to speech (TTS)", "vc": "Voice conversion (VC)",
                  "ustokenizer": "USTokenizer", "codec": "Codec", "training": "Training"}


def header(results: dict) -> str:
    """The page's title and what wrote it: the command, the date and commit, the machine and how time is taken."""
    machine, settings = results["machine"], results["settings"]
    commit = f" at commit `{machine['commit']}`" if machine.get("commit") else ""
    gpu = f"GPU {machine['gpu']} (unused)" if machine.get("gpu") else "no GPU"
    return "\n\n".join([
        "# Performance",
        f"Written by `{results['command']}` on {machine['date']}{commit}; `make performance` runs it on the main "
        "job's folders.",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']}, {gpu}; everything runs on "
        f"the CPU with {settings['threads']} thread(s). Each figure is the best of {settings['repeats']} rounds "
        f"({settings['clock']} clock) in which the settings of its section take turns, so every ratio compares "
        "figures measured side by side in this one run. The real-time factor is compute seconds / audio seconds "
        "(below 1: faster than real time); \"x\" is its inverse, audio seconds per compute second."])


def generation_options(speech_generation: dict) -> str:
    """A model's saved USToken generation settings as prose, e.g. "do_sample False, num_beams 8"."""
    return ", ".join(f"{name} {value}" for name, value in speech_generation.items())


def section_intro(name: str, section: dict, results: dict) -> str:
    """What section `name` measured, on which folders and data."""
    folders, split = results["folders"], results["settings"]["split"]
    if name == "asr":
        return (f"`{folders['model']}` through its ASR pipeline against {section['baseline']} "
                f"(`{folders['whisper']}`, transformers' ASR pipeline, greedy) on the first {section['items']} clips "
                f"of the corpus' `{split}` split ({section['audio_seconds']:.0f} s of audio); WER after the project's "
                "text normalisation.")
    if name in ("tts", "vc"):
        return (f"`{folders['model']}` answering the first {section['items']} {name.upper()} items of the corpus' "
                f"`{split}` split, each in the voice of its reference recording, writing USTokens as saved "
                f"({generation_options(section['speech_generation'])}), then waveforms through its codec. The "
                f"processor builds each request inside the timed call; the first waveform is ready when its whole "
                f"batch is.")
    if name == "ustokenizer":
        return (f"`{folders['ustokenizer']}` on batches of {section['batch_size']} clips cut from the `{split}` "
                f"audio, against transformers' `WhisperEncoder` with the same weights on features padded to 30 s; "
                f"speed-up: over the padded encoder; kept: the whole tokenizer's speed-up / the bare real-length "
                f"encoder's.")
    if name == "codec":
        return (f"`{folders['codec']}` on the first {section['utterances']} clips of the `{split}` split "
                f"({section['audio_seconds']:.0f} s of audio) in batches of {section['batch_size']}: encoding, then "
                f"decoding with each vocoder.")
    fp32, bf16 = (significant(section["matmul_peak_flops_per_second"][dtype] / 1e9) for dtype in ("fp32", "bf16"))
    size = section["matmul_size"]
    return (f"fp32 training steps (forward, backward, AdamW) of the tiny presets on real batches of the cached "
            f"training split: stage 1 (`{folders['ustokenizer']}` feeding its text LLM, random examples) and stage 3 "
            f"(built from `{folders['ustokenizer']}`, `{folders['codec']}` and `{folders['speaker_encoder']}` as "
            f"the recipe builds it, each task's first rows), beside the peak of this machine: a {size} x {size} "
            f"matrix product at {fp32} GFLOP/s in fp32 and {bf16} GFLOP/s in bf16, timed in the same rounds. FLOPs "
            f"as `torch.utils.flop_counter` counts them (matrix products, convolutions, attention; forward and "
            f"backward).")


SECTION_TABLES = {"asr": asr_table, "tts": generation_table, "vc": generation_table, "ustokenizer": ustokenizer_table,
                  "codec": codec_table, "training": training_table}


def section_markdown(name: str, results: dict) -> str:
    """One section of the page: its title, what it measured and its table(s)."""
    section = results["sections"][name]
    return f"## {SECTION_TITLES[name]}\n\n{section_intro(name, section, results)}\n\n{SECTION_TABLES[name](section)}"


def performance_page(results: dict) -> str:
    """The whole page: the header, then every measured section in the order measured."""
    return "\n\n".join([header(results), *(section_markdown(name, results) for name in results["sections"])]) + "\n"
