"""DualSpeechLM speech generation speed: KV caches vs recomputation, a batch vs items one by one.

    python -m bench.bench_generation                  # one thread, process CPU time (robust on a busy machine)
    python -m bench.bench_generation --clock wall --threads 2

Times the whole `generate_speech` (LLM writes USTokens, one re-encoding pass, AcousticGPT writes codes) for
`--batch-size` prompts on a small random model (Llama backbone and AcousticGPT of 4 layers x 256, 2 codebooks of
1024 codes at 50 frames/s). Untrained models rarely stop where a trained one would, so `</audio>` and the acoustic
EOS / no-speech rows of the output heads are zeroed: every item writes `--seconds` of speech (25 USTokens and 50
frames per second), the work a trained model does for that much audio. All settings run in one process,
interleaved within each of `--repeats` rounds, and each figure is the best round (`speech_generation_speeds`, which
the performance page runs on the trained model).
Prints a Markdown table: the real-time factor (compute seconds / audio seconds, < 1 is faster than real time) and the
speed-up ratios of each setting, acoustic tokens (frames x codebooks) per second of compute, and the first-audio
latency.

A second table times speech *with waveforms*: the batched, cached generation decoded by a random mel codec of the
embedded one's size that reads the USTokens and the voice (neural vocoder), once reading AcousticGPT's first
codebook too (`ustoken_decode_codebooks=1`: AcousticGPT runs) and once the tokens alone (`0`, the main job's
setting: AcousticGPT is skipped).
"""

import argparse
import math
import os
from collections.abc import Callable

import torch

from bench.common import add_timing_arguments, best_times, significant, timing_clock
from dualspeechlm.codecs import MelCodecConfig, MelCodecModel
from dualspeechlm.configuration_dualspeechlm import AcousticGPTConfig, DualSpeechLMConfig
from dualspeechlm.modeling_dualspeechlm import DualSpeechLMForConditionalGeneration

# the timed settings of `speech_generation_speeds`: (KV cache, batched)
SETTINGS = {"kv_cache_batched": (True, True), "kv_cache_one_by_one": (True, False),
            "no_cache_batched": (False, True), "no_cache_one_by_one": (False, False)}


def small_model(seed: int = 0) -> DualSpeechLMForConditionalGeneration:
    torch.manual_seed(seed)
    acoustic = AcousticGPTConfig(codebook_size=1024, num_codebooks=2, hidden_size=256, num_hidden_layers=4,
                                 num_attention_heads=4, intermediate_size=1024, max_position_embeddings=1024,
                                 dropout=0.0)
    config = DualSpeechLMConfig.tiny("llama", num_speech_tokens=1024, text_vocab_size=1000, acoustic_config=acoustic,
                                     text_overrides=dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                                                         num_attention_heads=4, num_key_value_heads=4,
                                                         max_position_embeddings=1024))
    return never_stops(DualSpeechLMForConditionalGeneration(config).eval())


@torch.no_grad()
def never_stops(model: DualSpeechLMForConditionalGeneration) -> DualSpeechLMForConditionalGeneration:
    """`model` with the output rows of `</audio>` and of AcousticGPT's EOS / no-speech codes zeroed, so that an
    untrained model writes speech up to its token limits (see the module docstring)."""
    model.language_model.get_output_embeddings().weight[model.config.audio_end_token_id] = 0.0
    acoustic = model.config.acoustic_config
    table = model.acoustic_gpt.embed_codes.weight  # codebook 0's rows come first
    table[[acoustic.eos_id, acoustic.no_speech_id]] = 0.0
    return model


def small_codec(seed: int = 0) -> MelCodecModel:
    """A random mel codec the size of the embedded one (models/mel-codec-ustokens), with 2 codebooks."""
    torch.manual_seed(seed)
    config = MelCodecConfig(num_quantizers=2, codebook_size=1024, hidden_size=192, latent_size=128, encoder_layers=4,
                            decoder_layers=4, vocoder="neural", ustoken_vocab_size=1024, speaker_embedding_size=512)
    return MelCodecModel(config).eval()


def speech_seconds(model: DualSpeechLMForConditionalGeneration, output) -> float:
    """Seconds of speech in a `generate_speech` output: its waveforms, or without them its acoustic frames."""
    if output.waveform_lengths is not None:
        return output.waveform_lengths.sum().item() / model.config.codec_sampling_rate
    return output.code_lengths.sum().item() / model.config.codec_frame_rate


def speech_generation_speeds(model: DualSpeechLMForConditionalGeneration, inputs_of: Callable[[range], dict],
                             items: int, batch_size: int, repeats: int, clock, **generation) -> dict:
    """Speech generation times of `items` requests, interleaved best of `repeats` rounds (`best_times`).

    `inputs_of(rows)` -> the `generate_speech` inputs of those rows (`input_ids`, `attention_mask`, ... of a
    left-padded batch), built inside the timed call so whatever it computes (a processor's tokenizing) counts;
    `generation`: `generate_speech` keyword arguments (e.g. `output_audio=True`). Every call starts from seed 0.
    Returns `items`, `batch_size`, `runs` ({setting of `SETTINGS`: `seconds`, `speech_seconds`,
    `real_time_factor` = seconds / speech seconds}), `first_audio_seconds` (until the first waveform exists:
    `one_item` generated alone, `first_batch` of `batch_size` items), `kv_cache_speedup` ({"batched",
    "one_by_one"}: no-cache seconds / cached seconds) and `batching_speedup` ({"kv_cache", "no_cache"}: one-by-one
    seconds / batched seconds).
    """
    def generate(rows: range, use_cache: bool) -> float:
        torch.manual_seed(0)
        return speech_seconds(model, model.generate_speech(**inputs_of(rows), use_cache=use_cache, **generation))

    def run(use_cache: bool, batched: bool) -> float:
        size = batch_size if batched else 1
        return sum(generate(range(start, min(start + size, items)), use_cache) for start in range(0, items, size))

    timed = {name: (lambda setting=setting: run(*setting)) for name, setting in SETTINGS.items()}
    timed["first_item"] = lambda: generate(range(0, 1), True)
    timed["first_batch"] = lambda: generate(range(0, min(batch_size, items)), True)
    generate(range(0, min(batch_size, items)), True)  # warm-up
    spoken = {}
    best = best_times(timed, repeats, clock, spoken)
    if not all(spoken[name] for name in SETTINGS):
        raise ValueError(f"the model wrote no speech for any of the {items} items: no real-time factor to measure")
    runs = {name: {"seconds": best[name], "speech_seconds": spoken[name],
                   "real_time_factor": best[name] / spoken[name]} for name in SETTINGS}
    return {"items": items, "batch_size": batch_size, "runs": runs,
            "first_audio_seconds": {"one_item": best["first_item"], "first_batch": best["first_batch"]},
            "kv_cache_speedup": {"batched": best["no_cache_batched"] / best["kv_cache_batched"],
                                 "one_by_one": best["no_cache_one_by_one"] / best["kv_cache_one_by_one"]},
            "batching_speedup": {"kv_cache": best["kv_cache_one_by_one"] / best["kv_cache_batched"],
                                 "no_cache": best["no_cache_one_by_one"] / best["no_cache_batched"]}}


def generation_table(speeds: dict) -> str:
    """Markdown of a `speech_generation_speeds` result: one row per setting, then the first-audio latency."""
    lines = ["| KV cache | items | seconds | speech seconds | real-time factor | KV cache speed-up | "
             "batching speed-up |", "|---|---|---|---|---|---|---|"]
    batch = min(speeds["batch_size"], speeds["items"])
    for name, (use_cache, batched) in SETTINGS.items():
        run = speeds["runs"][name]
        cache_gain = speeds["kv_cache_speedup"]["batched" if batched else "one_by_one"] if use_cache else 1.0
        batch_gain = speeds["batching_speedup"]["kv_cache" if use_cache else "no_cache"] if batched else 1.0
        items = f"batches of {batch}" if batched else "one by one"
        lines.append(f"| {'yes' if use_cache else 'no'} | {items} | {significant(run['seconds'])} | "
                     f"{run['speech_seconds']:.1f} | {significant(run['real_time_factor'])} | {cache_gain:.1f}x | "
                     f"{batch_gain:.1f}x |")
    first = speeds["first_audio_seconds"]
    lines += ["", "| first waveform ready after (KV cache) | seconds | vs one item alone |", "|---|---|---|",
              f"| one item alone | {significant(first['one_item'])} | 1.0x |",
              f"| a batch of {batch} | {significant(first['first_batch'])} | "
              f"{first['first_batch'] / first['one_item']:.1f}x |"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=2.0, help="speech written per item")
    parser.add_argument("--prompt-tokens", type=int, default=24)
    add_timing_arguments(parser, repeats=2)
    args = parser.parse_args()
    clock = timing_clock(args)

    model = small_model()
    config = model.config
    frames, ustokens = round(args.seconds * config.codec_frame_rate), round(args.seconds * 25)
    prompts = torch.randint(3, 1000, (args.batch_size, args.prompt_tokens), generator=torch.Generator().manual_seed(0))
    settings = dict(do_sample=False, max_new_tokens=ustokens, acoustic_do_sample=False, acoustic_max_new_tokens=frames)

    speeds = speech_generation_speeds(model, lambda rows: {"input_ids": prompts[rows.start:rows.stop]},
                                      args.batch_size, args.batch_size, args.repeats, clock, **settings)
    assert all(math.isclose(run["speech_seconds"], args.batch_size * frames / config.codec_frame_rate)
               for run in speeds["runs"].values()), "every item must write the requested frames"
    tokens_per_second = config.codec_frame_rate * config.num_codebooks
    print(f"batch {args.batch_size} x {args.seconds:g} s ({ustokens} USTokens, {frames} frames x "
          f"{config.num_codebooks} codebooks each), prompt {args.prompt_tokens} tokens, {args.threads} thread(s), "
          f"{args.clock} clock, best of {args.repeats}, load average {os.getloadavg()[0]:.1f}\n")
    print(generation_table(speeds))
    print("\nacoustic tokens per second of compute: " + ", ".join(
        f"{name} {tokens_per_second / run['real_time_factor']:.0f}" for name, run in speeds["runs"].items()))

    codec, speakers = small_codec(), torch.randn(args.batch_size, config.speaker_embedding_size)
    model.set_codec(codec)

    def with_codec(depth: int):
        codec.config.ustoken_decode_codebooks = depth
        return model.generate(prompts, speaker_embeddings=speakers, output_audio=True, **settings).waveform_lengths

    rendered = {"USTokens + voice + AcousticGPT's codebook 0 (depth 1)": lambda: with_codec(1),
                "USTokens + voice alone (depth 0: AcousticGPT skipped)": lambda: with_codec(0)}
    assert all((run() == round(args.seconds * codec.sampling_rate)).all() for run in rendered.values())  # warm-up
    best = best_times(rendered, args.repeats, clock)
    audio = args.batch_size * args.seconds
    print("\n| waveforms, KV cache, batched: the codec reads | seconds | real-time factor |\n|---|---|---|")
    for name, seconds in best.items():
        print(f"| {name} | {seconds:.2f} | {seconds / audio:.3f} |")
    first, second = best.values()
    print(f"\nskipping AcousticGPT where its codes go unread: {first / second:.1f}x faster")


if __name__ == "__main__":
    main()
