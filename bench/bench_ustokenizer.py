"""USTokenizer speed: seconds of audio tokenized per second of compute, real length vs 30 s padding.

    python -m bench.bench_ustokenizer --whisper models/whisper-tiny.en --threads 2
    python -m bench.bench_ustokenizer --threads 1 --clock cpu   # on a busy machine

For 2 s, 5 s and 10 s clips (batch 8, espeak-ng speech), in one run with the same Whisper weights
(`ustokenizer_speeds`, which the performance page runs on the trained tokenizer):
- transformers' `WhisperEncoder` on features padded to 30 s (3000 mel frames), as Whisper requires;
- the bare `RealLengthWhisperEncoder` on the real number of mel frames;
- the whole tokenizer `USTokenizerModel.encode` (encoder + downsample + conv encoder + VQ; tiny preset
  heads, untrained: same compute as trained).
Log-mel features are computed beforehand (not timed). Each figure is the best of `--repeats` rounds,
the three models interleaved within a round.
Prints a Markdown table; "x" = audio seconds / compute seconds, speed-up = over the padded encoder,
"kept" = the tokenizer's speed-up / the bare encoder's (target >= 80%).
"""

import argparse
import os

import numpy as np
import torch
from transformers import WhisperFeatureExtractor
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from bench.common import add_folder_arguments, add_timing_arguments, best_times, timing_clock
from dualspeechlm.configuration_ustokenizer import USTokenizerConfig
from dualspeechlm.feature_extraction_ustokenizer import USTokenizerFeatureExtractor
from dualspeechlm.modeling_ustokenizer import USTokenizerModel
from dualspeechlm.processing.corpus import TRAIN_VOICES, synthesize

TEXT = ("the quiet horse slept behind the old bridge while seven green birds sang in the morning rain "
        "and anna saw the cat walk slowly across the garden wall ")
SAMPLING_RATE = 16000


@torch.inference_mode()
def ustokenizer_speeds(tokenizer: USTokenizerModel, speech: np.ndarray, clip_seconds: list[float], batch_size: int,
                       repeats: int, clock) -> dict:
    """Tokenizing speed of `tokenizer` against transformers' `WhisperEncoder` (its encoder's weights, 30 s padding).

    speech: 16 kHz mono `[samples]`, cut into `batch_size` clips of each length in `clip_seconds` (rolled, so the
    clips differ). Returns `batch_size` and `clips`: per length, `seconds` and the speed (audio seconds per compute
    second) of the `padded_encoder`, the `real_length_encoder` and the whole `ustokenizer`, their speed-ups over
    the padded encoder (`encoder_speedup`, `ustokenizer_speedup`) and `kept` = ustokenizer_speedup / encoder_speedup.
    """
    padded_encoder = WhisperEncoder(tokenizer.config.encoder_config).eval()
    padded_encoder.load_state_dict(tokenizer.encoder.state_dict())
    padded_features, real_features = WhisperFeatureExtractor(), USTokenizerFeatureExtractor()
    padded_encoder(torch.zeros(1, padded_features.feature_size, padded_features.nb_max_frames))  # warm-up
    clips = []
    for seconds in clip_seconds:
        samples = int(seconds * SAMPLING_RATE)
        audio = [np.resize(np.roll(speech, -i * 7919), samples) for i in range(batch_size)]
        padded = padded_features(audio, sampling_rate=SAMPLING_RATE, return_tensors="pt").input_features
        real = real_features(audio, sampling_rate=SAMPLING_RATE, return_tensors="pt")
        tokenizer.encode(real.input_features, real.attention_mask)  # warm-up at this length
        times = best_times({
            "padded_encoder": lambda: padded_encoder(padded),
            "real_length_encoder": lambda: tokenizer.encoder(real.input_features, real.attention_mask),
            "ustokenizer": lambda: tokenizer.encode(real.input_features, real.attention_mask),
        }, repeats, clock)
        speed = {name: seconds * batch_size / time for name, time in times.items()}
        encoder_gain = speed["real_length_encoder"] / speed["padded_encoder"]
        tokenizer_gain = speed["ustokenizer"] / speed["padded_encoder"]
        clips.append({"seconds": seconds, **speed, "encoder_speedup": encoder_gain,
                      "ustokenizer_speedup": tokenizer_gain, "kept": tokenizer_gain / encoder_gain})
    return {"batch_size": batch_size, "clips": clips}


def ustokenizer_table(speeds: dict) -> str:
    """Markdown of a `ustokenizer_speeds` result, one row per clip length ("x": audio seconds per compute second)."""
    lines = ["| clip | Whisper, 30 s padding | real-length encoder | speed-up | USTokenizer encode | speed-up | "
             "kept |", "|---|---|---|---|---|---|---|"]
    for clip in speeds["clips"]:
        lines.append(f"| {clip['seconds']:g} s | {clip['padded_encoder']:.1f}x | {clip['real_length_encoder']:.1f}x | "
                     f"{clip['encoder_speedup']:.1f}x | {clip['ustokenizer']:.1f}x | "
                     f"{clip['ustokenizer_speedup']:.1f}x | {clip['kept']:.0%} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_folder_arguments(parser, "whisper")
    parser.add_argument("--seconds", type=float, nargs="+", default=[2.0, 5.0, 10.0])
    parser.add_argument("--batch-size", type=int, default=8)
    add_timing_arguments(parser, threads=2, clock="wall")
    args = parser.parse_args()
    clock = timing_clock(args)

    tokenizer = USTokenizerModel.from_whisper(args.whisper, USTokenizerConfig.tiny()).eval()
    speech = np.concatenate([synthesize(TEXT, voice) for voice in TRAIN_VOICES])
    print(f"{args.whisper}, batch {args.batch_size}, {args.threads} threads, {args.clock} clock, "
          f"best of {args.repeats}, load average before: {os.getloadavg()[0]:.1f}\n")
    print(ustokenizer_table(ustokenizer_speeds(tokenizer, speech, args.seconds, args.batch_size, args.repeats, clock)))
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
