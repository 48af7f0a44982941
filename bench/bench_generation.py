"""DualSpeechLM speech generation speed: KV caches vs recomputation, a batch vs items one by one.

    python -m bench.bench_generation                  # one thread, process CPU time (robust on a busy machine)
    python -m bench.bench_generation --clock wall --threads 2

Times the whole `generate_speech` (LLM writes USTokens, one re-encoding pass, AcousticGPT writes codes) for
`--batch-size` prompts on a small random model (Llama backbone and AcousticGPT of 4 layers x 256, 2 codebooks of
1024 codes at 50 frames/s). Untrained models rarely stop where a trained one would, so `</audio>` and the acoustic
EOS / no-speech rows of the output heads are zeroed: every item writes `--seconds` of speech (25 USTokens and 50
frames per second), the work a trained model does for that much audio. All four settings run in one process,
interleaved within each of `--repeats` rounds, and each figure is the best round.
Prints a Markdown table: acoustic tokens (frames x codebooks) per second of compute and the real-time factor
(compute seconds / audio seconds, < 1 is faster than real time), then the speed-up ratios.

A second table times speech *with waveforms*: the batched, cached generation decoded by a random mel codec of the
embedded one's size that reads the USTokens and the voice (neural vocoder), once reading AcousticGPT's first
codebook too (`ustoken_decode_codebooks=1`: AcousticGPT runs) and once the tokens alone (`0`, the main job's
setting: AcousticGPT is skipped).
"""

import argparse
import os

import torch

from bench.common import add_timing_arguments, best_times, timing_clock
from dualspeechlm.codecs import MelCodecConfig, MelCodecModel
from dualspeechlm.configuration_dualspeechlm import AcousticGPTConfig, DualSpeechLMConfig
from dualspeechlm.modeling_dualspeechlm import DualSpeechLMForConditionalGeneration


def small_model(seed: int = 0) -> DualSpeechLMForConditionalGeneration:
    torch.manual_seed(seed)
    acoustic = AcousticGPTConfig(codebook_size=1024, num_codebooks=2, hidden_size=256, num_hidden_layers=4,
                                 num_attention_heads=4, intermediate_size=1024, max_position_embeddings=1024,
                                 dropout=0.0)
    config = DualSpeechLMConfig.tiny("llama", num_speech_tokens=1024, text_vocab_size=1000, acoustic_config=acoustic,
                                     text_overrides=dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                                                         num_attention_heads=4, num_key_value_heads=4,
                                                         max_position_embeddings=1024))
    model = DualSpeechLMForConditionalGeneration(config).eval()
    with torch.no_grad():  # never stop early (see the module docstring)
        model.language_model.get_output_embeddings().weight[config.audio_end_token_id] = 0.0
        table = model.acoustic_gpt.embed_codes.weight  # codebook 0's rows come first
        table[[acoustic.eos_id, acoustic.no_speech_id]] = 0.0
    return model


def small_codec(seed: int = 0) -> MelCodecModel:
    """A random mel codec the size of the embedded one (models/mel-codec-ustokens), with 2 codebooks."""
    torch.manual_seed(seed)
    config = MelCodecConfig(num_quantizers=2, codebook_size=1024, hidden_size=192, latent_size=128, encoder_layers=4,
                            decoder_layers=4, vocoder="neural", ustoken_vocab_size=1024, speaker_embedding_size=512)
    return MelCodecModel(config).eval()


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

    def batched(use_cache: bool):
        return model.generate_speech(prompts, use_cache=use_cache, **settings).code_lengths

    def one_by_one(use_cache: bool):
        return torch.cat([model.generate_speech(prompts[i:i + 1], use_cache=use_cache, **settings).code_lengths
                          for i in range(args.batch_size)])

    assert (batched(True) == frames).all(), "every item must write the requested frames"  # and warms up
    best = best_times({("KV cache", "batched"): lambda: batched(True),
                       ("KV cache", "one by one"): lambda: one_by_one(True),
                       ("no cache", "batched"): lambda: batched(False),
                       ("no cache", "one by one"): lambda: one_by_one(False)},
                      args.repeats, clock)

    tokens, audio = args.batch_size * frames * config.num_codebooks, args.batch_size * frames / config.codec_frame_rate
    print(f"batch {args.batch_size} x {args.seconds:g} s ({ustokens} USTokens, {frames} frames x "
          f"{config.num_codebooks} codebooks each), prompt {args.prompt_tokens} tokens, {args.threads} thread(s), "
          f"{args.clock} clock, best of {args.repeats}, load average {os.getloadavg()[0]:.1f}\n")
    print("| cache | items | seconds | acoustic tokens/s | real-time factor |\n|---|---|---|---|---|")
    for (cache, items), seconds in best.items():
        print(f"| {cache} | {items} | {seconds:.2f} | {tokens / seconds:.0f} | {seconds / audio:.3f} |")
    print(f"\nKV cache speed-up: {best['no cache', 'batched'] / best['KV cache', 'batched']:.1f}x batched, "
          f"{best['no cache', 'one by one'] / best['KV cache', 'one by one']:.1f}x one by one; "
          f"batching speed-up: {best['KV cache', 'one by one'] / best['KV cache', 'batched']:.1f}x with the cache, "
          f"{best['no cache', 'one by one'] / best['no cache', 'batched']:.1f}x without")

    codec, speakers = small_codec(), torch.randn(args.batch_size, config.speaker_embedding_size)
    model.set_codec(codec)

    def with_codec(depth: int):
        codec.config.ustoken_decode_codebooks = depth
        return model.generate(prompts, speaker_embeddings=speakers, output_audio=True, **settings).waveform_lengths

    rendered = {"USTokens + voice + AcousticGPT's codebook 0 (depth 1)": lambda: with_codec(1),
                "USTokens + voice alone (depth 0: AcousticGPT skipped)": lambda: with_codec(0)}
    assert all((run() == round(args.seconds * codec.sampling_rate)).all() for run in rendered.values())  # warm-up
    best = best_times(rendered, args.repeats, clock)
    print("\n| waveforms, KV cache, batched: the codec reads | seconds | real-time factor |\n|---|---|---|")
    for name, seconds in best.items():
        print(f"| {name} | {seconds:.2f} | {seconds / audio:.3f} |")
    first, second = best.values()
    print(f"\nskipping AcousticGPT where its codes go unread: {first / second:.1f}x faster")


if __name__ == "__main__":
    main()
