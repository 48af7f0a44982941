"""Codec speed: seconds of audio encoded + decoded per second of compute, per vocoder.

    python -m bench.bench_codec --codec models/mel-codec --corpus data/corpus

Without --codec a randomly initialised default-size codec is timed (same compute as a trained one).
Prints a Markdown table; the factor is (audio seconds) / (wall seconds), > 1 means faster than real time.
"""

import argparse
import time

import torch

from dualspeechlm.configuration_mel_codec import VOCODERS, MelCodecConfig
from dualspeechlm.modeling_mel_codec import MelCodecModel
from dualspeechlm.training.codec_training import corpus_waveforms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--codec", default=None)
    parser.add_argument("--corpus", default="data/corpus")
    parser.add_argument("--utterances", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = (MelCodecModel.from_pretrained(args.codec) if args.codec else MelCodecModel(MelCodecConfig())).eval()
    waveforms, _, _ = corpus_waveforms(args.corpus, "test", args.utterances)
    audio_seconds = sum(len(w) for w in waveforms) / model.sampling_rate
    model.encode(waveforms[:2])  # warm-up (and k-means init for an untrained codec)
    print(f"{len(waveforms)} utterances, {audio_seconds:.0f} s of audio, batch {args.batch_size}, "
          f"{args.threads} threads\n")
    print("| vocoder | encode x real time | decode x real time | encode+decode x real time |\n|---|---|---|---|")
    for vocoder in VOCODERS:
        model.config.vocoder = vocoder
        encode_time = decode_time = 0.0
        for start in range(0, len(waveforms), args.batch_size):
            chunk = waveforms[start : start + args.batch_size]
            began = time.perf_counter()
            codes = model.encode(chunk)
            encoded = time.perf_counter()
            model.decode(codes.codes, codes.lengths)
            encode_time += encoded - began
            decode_time += time.perf_counter() - encoded
        print(f"| {vocoder} | {audio_seconds / encode_time:.0f}x | {audio_seconds / decode_time:.0f}x | "
              f"{audio_seconds / (encode_time + decode_time):.0f}x |")


if __name__ == "__main__":
    main()
