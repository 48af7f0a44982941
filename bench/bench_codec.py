"""Codec speed: the real-time factor of encoding + decoding, per vocoder.

    python -m bench.bench_codec --codec models/mel-codec --corpus data/corpus

Without --codec a randomly initialised default-size codec is timed (same compute as a trained one).
Encoding and each vocoder's decoding are timed in one run, interleaved within each of `--repeats` rounds
(`codec_speeds`, which the performance page runs too). Prints a Markdown table; the real-time factor is
(compute seconds) / (audio seconds), < 1 means faster than real time.
"""

import argparse

import torch

from bench.common import add_folder_arguments, add_timing_arguments, best_times, significant, timing_clock
from dualspeechlm.configuration_mel_codec import VOCODERS, MelCodecConfig
from dualspeechlm.modeling_mel_codec import MelCodecModel
from dualspeechlm.training.codec_training import corpus_waveforms


@torch.no_grad()
def codec_speeds(model: MelCodecModel, waveforms: list[torch.Tensor], batch_size: int, repeats: int, clock) -> dict:
    """Encode and decode times of `waveforms` (`[samples]` each, at the codec's rate) in batches of `batch_size`.

    Returns `utterances`, `audio_seconds`, `batch_size`, `encode_seconds` and per vocoder of `VOCODERS`
    (`vocoders`): `decode_seconds` and the real-time factors (compute seconds / audio seconds) `encode_rtf`,
    `decode_rtf`, `round_trip_rtf` (encode + decode). The codec's own vocoder setting is restored afterwards.
    """
    chunks = [waveforms[start : start + batch_size] for start in range(0, len(waveforms), batch_size)]
    encoded = [model.encode(chunk) for chunk in chunks]  # warm-up (and k-means init for an untrained codec)
    saved_vocoder = model.config.vocoder

    def decode_all(vocoder: str) -> None:
        model.config.vocoder = vocoder
        for codes in encoded:
            model.decode(codes.codes, codes.lengths)

    timed = {"encode": lambda: [model.encode(chunk) for chunk in chunks],
             **{vocoder: (lambda vocoder=vocoder: decode_all(vocoder)) for vocoder in VOCODERS}}
    best = best_times(timed, repeats, clock)
    model.config.vocoder = saved_vocoder
    audio = sum(len(w) for w in waveforms) / model.sampling_rate
    vocoders = {vocoder: {"decode_seconds": best[vocoder], "encode_rtf": best["encode"] / audio,
                          "decode_rtf": best[vocoder] / audio,
                          "round_trip_rtf": (best["encode"] + best[vocoder]) / audio} for vocoder in VOCODERS}
    return {"utterances": len(waveforms), "audio_seconds": audio, "batch_size": batch_size,
            "encode_seconds": best["encode"], "vocoders": vocoders}


def codec_table(speeds: dict) -> str:
    """Markdown of a `codec_speeds` result: one row per vocoder, its round trip beside the fastest one's."""
    fastest = min(v["round_trip_rtf"] for v in speeds["vocoders"].values())
    lines = ["| vocoder | encode real-time factor | decode real-time factor | encode + decode real-time factor | "
             "vs the fastest |", "|---|---|---|---|---|"]
    for vocoder, speed in speeds["vocoders"].items():
        lines.append(f"| {vocoder} | {significant(speed['encode_rtf'])} | {significant(speed['decode_rtf'])} | "
                     f"{significant(speed['round_trip_rtf'])} | {speed['round_trip_rtf'] / fastest:.1f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--codec", default=None)
    add_folder_arguments(parser, "corpus")
    parser.add_argument("--utterances", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    add_timing_arguments(parser, repeats=2, threads=2, clock="wall")
    args = parser.parse_args()
    clock = timing_clock(args)
    model = (MelCodecModel.from_pretrained(args.codec) if args.codec else MelCodecModel(MelCodecConfig())).eval()
    waveforms, _, _ = corpus_waveforms(args.corpus, "test", args.utterances)
    speeds = codec_speeds(model, waveforms, args.batch_size, args.repeats, clock)
    print(f"{speeds['utterances']} utterances, {speeds['audio_seconds']:.0f} s of audio, batch {args.batch_size}, "
          f"{args.threads} threads, {args.clock} clock, best of {args.repeats}\n")
    print(codec_table(speeds))


if __name__ == "__main__":
    main()
