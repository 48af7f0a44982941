"""USTokenizer speed: seconds of audio tokenized per second of compute, real length vs 30 s padding.

    python -m bench.bench_ustokenizer --whisper models/whisper-tiny.en --threads 2
    python -m bench.bench_ustokenizer --threads 1 --clock cpu   # on a busy machine

For 2 s, 5 s and 10 s clips (batch 8, espeak-ng speech), in one run with the same Whisper weights:
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

from bench.common import add_timing_arguments, best_times, timing_clock
from dualspeechlm.configuration_ustokenizer import USTokenizerConfig
from dualspeechlm.feature_extraction_ustokenizer import USTokenizerFeatureExtractor
from dualspeechlm.modeling_ustokenizer import USTokenizerModel
from dualspeechlm.processing.corpus import TRAIN_VOICES, synthesize

TEXT = ("the quiet horse slept behind the old bridge while seven green birds sang in the morning rain "
        "and anna saw the cat walk slowly across the garden wall ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--whisper", default="models/whisper-tiny.en")
    parser.add_argument("--seconds", type=float, nargs="+", default=[2.0, 5.0, 10.0])
    parser.add_argument("--batch-size", type=int, default=8)
    add_timing_arguments(parser, threads=2, clock="wall")
    args = parser.parse_args()
    clock = timing_clock(args)

    tokenizer = USTokenizerModel.from_whisper(args.whisper, USTokenizerConfig.tiny()).eval()
    padded_encoder = WhisperEncoder(tokenizer.config.encoder_config).eval()
    padded_encoder.load_state_dict(tokenizer.encoder.state_dict())
    speech = np.concatenate([synthesize(TEXT, voice) for voice in TRAIN_VOICES])
    padded_features, real_features = WhisperFeatureExtractor(), USTokenizerFeatureExtractor()

    print(f"{args.whisper}, batch {args.batch_size}, {args.threads} threads, {args.clock} clock, "
          f"best of {args.repeats}, load average before: {os.getloadavg()[0]:.1f}\n")
    print("| clip | Whisper, 30 s padding | real-length encoder | speed-up | USTokenizer encode | speed-up | kept |")
    print("|---|---|---|---|---|---|---|")
    with torch.inference_mode():
        padded_encoder(torch.zeros(1, 80, 3000))  # warm-up
        for seconds in args.seconds:
            samples = int(seconds * 16000)
            clips = [np.resize(np.roll(speech, -i * 7919), samples) for i in range(args.batch_size)]
            padded = torch.from_numpy(padded_features(clips, sampling_rate=16000, return_tensors="np").input_features)
            real = real_features(clips, sampling_rate=16000, return_tensors="pt")
            audio = seconds * args.batch_size
            tokenizer.encode(real.input_features, real.attention_mask)  # warm-up at this length
            times = best_times({
                "padded": lambda: padded_encoder(padded),
                "encoder": lambda: tokenizer.encoder(real.input_features, real.attention_mask),
                "tokenizer": lambda: tokenizer.encode(real.input_features, real.attention_mask),
            }, args.repeats, clock)
            reference, encoder, whole = (audio / times[name] for name in ("padded", "encoder", "tokenizer"))
            print(f"| {seconds:g} s | {reference:.1f}x | {encoder:.1f}x | {encoder / reference:.1f}x | {whole:.1f}x | "
                  f"{whole / reference:.1f}x | {whole / encoder:.0%} |", flush=True)
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
