"""Where does the embedded codec lose the judges' words: the log-mel itself, the vocoder, or the quantizer?

    python -m bench.probes.probe_codec_losses --limit 100                      # the representation alone
    python -m bench.probes.probe_codec_losses --limit 100 --codec models/mel-codec

On the first `--limit` utterances of the speech config's `test` and `test_unseen_voice` splits, the judges (Whisper
tiny.en, pocketsphinx) transcribe the reference audio and the same audio rebuilt several ways, each adding a loss:
the true log-mel through Griffin-Lim at the codec's resolution (80 bins, 50 frames/s), with more bins (128), and
with more bins and frames (128 at 100/s): does a finer mel lift the ceiling? With `--codec`: the true log-mel
through that codec's neural vocoder, and the codec's round trip (its codes, decoded by its saved vocoder). Prints a
Markdown table of WER and its ratio to the reference's (the codec's bar is 1.15x) and writes the scores, per voice
too, to `--output` (JSON).
"""

import argparse
import json

import torch

from dualspeechlm.codecs import MelCodecConfig, MelCodecModel, load_codec
from dualspeechlm.processing.corpus import load_corpus
from dualspeechlm.training.judge import _load_split, judge, speech_judges

RESOLUTIONS = {"true log-mel, Griffin-Lim, 80 bins at 50/s": dict(n_mels=80, hop_length=320),
               "true log-mel, Griffin-Lim, 128 bins at 50/s": dict(n_mels=128, hop_length=320),
               "true log-mel, Griffin-Lim, 128 bins at 100/s": dict(n_mels=128, hop_length=160)}


def vocoded(codec: MelCodecModel, waveforms: list[torch.Tensor], vocoder: str) -> list[torch.Tensor]:
    """Each waveform's true log-mel (at `codec`'s resolution) rendered back by `vocoder`, one at a time."""
    rebuilt = []
    with torch.no_grad():
        for waveform in waveforms:
            log_mel, frames = codec.log_mel(waveform[None], torch.tensor([len(waveform)]))
            rebuilt.append(codec.vocode(log_mel, frames, vocoder)[0, : len(waveform)])
    return rebuilt


def round_trip(codec, waveforms: list[torch.Tensor]) -> list[torch.Tensor]:
    with torch.no_grad():
        encoded = [codec.encode(waveform) for waveform in waveforms]
        return [codec.decode(out.codes, out.lengths).waveforms[0] for out in encoded]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="data/corpus")
    parser.add_argument("--whisper", default="models/whisper-tiny.en")
    parser.add_argument("--codec", default=None, help="a trained embedded codec folder")
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--griffin-lim-iterations", type=int, default=32)
    parser.add_argument("--output", default=None, help="a JSON file for the scores")
    args = parser.parse_args()

    judges = speech_judges(args.whisper, args.corpus, names=("whisper", "pocketsphinx"))
    codec = load_codec(args.codec).eval() if args.codec else None
    corpus = load_corpus(args.corpus, "speech")
    results = {}
    for split in ("test", "test_unseen_voice"):
        texts, arrays, voices = _load_split(corpus[split], args.limit)
        waveforms = [torch.from_numpy(array).float() for array in arrays]
        ways = {"reference": waveforms}
        for name, resolution in RESOLUTIONS.items():
            config = MelCodecConfig(**resolution, vocoder="griffin_lim",
                                    griffin_lim_iterations=args.griffin_lim_iterations)
            ways[name] = vocoded(MelCodecModel(config).eval(), waveforms, "griffin_lim")
        if codec is not None:
            ways["true log-mel, the codec's neural vocoder"] = vocoded(codec, waveforms, "neural")
            ways[f"the codec's round trip ({codec.config.vocoder})"] = round_trip(codec, waveforms)
        results[split] = {way: judge(texts, [w.numpy() for w in audio], 16000, judges, groups=voices)
                          for way, audio in ways.items()}
        print(f"\n{split} ({len(texts)} utterances)\n\n| audio | " + " | ".join(f"{j} WER" for j in judges)
              + " |\n|---|" + "---|" * len(judges))
        reference = results[split]["reference"]["judges"]
        for way, scored in results[split].items():
            wers = [scored["judges"][j]["wer"] for j in judges]
            print(f"| {way} | " + " | ".join(f"{100 * wer:.1f}% ({wer / reference[j]['wer']:.2f}x)"
                                            for wer, j in zip(wers, judges)) + " |")
    if args.output:
        summary = {split: {way: {j: {"wer": scored["judges"][j]["wer"],
                                     "by_voice": {v: g["wer"] for v, g in scored["judges"][j]["groups"].items()}}
                                 for j in judges} for way, scored in by_way.items()}
                   for split, by_way in results.items()}
        with open(args.output, "w") as f:
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
