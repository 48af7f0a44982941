"""Train the embedded mel codec on the corpus, then judge its round trips.

Two stages, both on random crops of the `speech` training audio:
1. the autoencoder: conv encoder -> residual VQ -> conv decoder, L1 on log-mel + commitment;
2. the neural vocoder, on the *decoded* (quantized) mels of stage 1, so it learns to undo the
   codec's smoothing: multi-resolution STFT loss + log-mel L1 against the original audio;
3. decoder and vocoder together on that audio loss (encoder and codebooks frozen, so the codes stay
   the same), plus the decoded mel's L1 to the true log-mel, which keeps it fit for Griffin-Lim.
Then both vocoders (neural, Griffin-Lim) are judged on the test splits against the original
audio, and the better one is saved as the codec's default.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from dualspeechlm.configuration_mel_codec import VOCODERS, MelCodecConfig
from dualspeechlm.modeling_mel_codec import MelCodecModel
from dualspeechlm.spectral import stft

from .codec_training import add_run_arguments, corpus_waveforms, optimizer_step
from .judge import judge, speech_judges

STFT_RESOLUTIONS = ((512, 128), (1024, 256), (2048, 512))


def random_crops(waveforms: list[torch.Tensor], batch_size: int, samples: int, generator: torch.Generator):
    """A batch `[batch, samples]` of random crops (zero padded, with lengths) from random utterances."""
    picks = torch.randint(len(waveforms), (batch_size,), generator=generator).tolist()
    batch, lengths = torch.zeros(batch_size, samples), torch.zeros(batch_size, dtype=torch.long)
    for row, index in enumerate(picks):
        audio = waveforms[index]
        start = torch.randint(max(1, len(audio) - samples + 1), (1,), generator=generator).item()
        crop = audio[start : start + samples]
        batch[row, : len(crop)], lengths[row] = crop, len(crop)
    return batch, lengths


def multi_resolution_stft_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Spectral convergence + log-magnitude L1, averaged over three STFT resolutions."""
    total = 0.0
    for n_fft, hop in STFT_RESOLUTIONS:
        window = torch.hann_window(n_fft)
        predicted, wanted = (stft(x, n_fft, hop, window).abs() for x in (prediction, target))
        convergence = (wanted - predicted).norm() / wanted.norm().clamp(min=1e-8)
        log_l1 = (predicted.clamp(min=1e-5).log() - wanted.clamp(min=1e-5).log()).abs().mean()
        total = total + convergence + log_l1
    return total / len(STFT_RESOLUTIONS)


def train_autoencoder(model: MelCodecModel, waveforms, steps: int, batch_size: int, segment: int, lr: float,
                      generator) -> list[float]:
    parameters = [p for name, p in model.named_parameters() if not name.startswith("vocoder.")]
    optimizer = torch.optim.AdamW(parameters, lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    losses = []
    model.train()
    for step in (bar := tqdm(range(steps), desc="codec autoencoder", unit="step")):
        batch, lengths = random_crops(waveforms, batch_size, segment, generator)
        output = model(batch, lengths)
        optimizer_step(optimizer, output.loss, parameters, step, steps, lr)
        losses.append(output.reconstruction_loss.item())
        bar.set_postfix(mel_l1=f"{losses[-1]:.3f}")
    return losses


def vocoder_loss(model: MelCodecModel, batch: torch.Tensor, lengths: torch.Tensor,
                 train_decoder: bool = False) -> torch.Tensor:
    """Multi-resolution STFT + log-mel L1 of the vocoder fed the codec's decoded mels of `batch`; with
    `train_decoder` the gradient reaches the decoder as well, and the decoded mel's L1 to the true log-mel joins."""
    with torch.no_grad():
        log_mel, frame_lengths = model.log_mel(batch, lengths)
        codes = model.quantize(log_mel, frame_lengths)[1]
    with torch.set_grad_enabled(train_decoder):
        decoded = model.decode_mel(codes, frame_lengths)
    audio = model.vocode(decoded, frame_lengths, vocoder="neural")[:, : batch.shape[1]]
    target = batch[:, : audio.shape[1]]
    loss = multi_resolution_stft_loss(audio, target) + (model.mel(audio) - model.mel(target)).abs().mean()
    if train_decoder:
        loss = loss + model.mel_l1(decoded, log_mel, frame_lengths)
    return loss


def train_vocoder(model: MelCodecModel, waveforms, steps: int, batch_size: int, segment: int, lr: float, generator,
                  train_decoder: bool = False) -> list[float]:
    """The neural vocoder (stage 2), or with `train_decoder` the decoder and vocoder together (stage 3); the
    encoder and codebooks stay as they are (eval mode: no codebook updates)."""
    parts = [model.vocoder, model.decoder] if train_decoder else [model.vocoder]
    parameters = [p for part in parts for p in part.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=lr, betas=(0.8, 0.99))
    losses = []
    model.eval()
    for part in parts:
        part.train()
    name = "codec decoder + vocoder" if train_decoder else "codec vocoder"
    for step in (bar := tqdm(range(steps), desc=name, unit="step")):
        loss = vocoder_loss(model, *random_crops(waveforms, batch_size, segment, generator),
                            train_decoder=train_decoder)
        losses.append(optimizer_step(optimizer, loss, parameters, step, steps, lr))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    return losses


def round_trip(model: MelCodecModel, waveforms: list[torch.Tensor], batch_size: int = 16) -> list[torch.Tensor]:
    """Encode and decode every waveform (batched); returns the decoded audio trimmed to each input's length."""
    decoded = []
    for start in range(0, len(waveforms), batch_size):
        chunk = waveforms[start : start + batch_size]
        codes = model.encode(chunk)
        output = model.decode(codes.codes, codes.lengths)
        decoded += [audio[: len(source)] for audio, source in zip(output.waveforms, chunk)]
    return decoded


def evaluate_round_trips(model: MelCodecModel, corpus_dir, splits, limit: int, judges: dict) -> dict:
    """Judges' WER on the original audio and on each vocoder's round trip, per split and voice."""
    report = {}
    for split in splits:
        originals, texts, speakers = corpus_waveforms(corpus_dir, split, limit)
        conditions = {"original": originals}
        for vocoder in VOCODERS:
            model.config.vocoder = vocoder
            started = time.perf_counter()
            conditions[vocoder] = round_trip(model, originals)
            seconds = sum(len(w) for w in originals) / model.sampling_rate
            report.setdefault("real_time_factor", {})[f"{split}/{vocoder}"] = (time.perf_counter() - started) / seconds
        report[split] = {
            name: judge(texts, [w.numpy() for w in audio], model.sampling_rate, judges=judges, groups=speakers)
            for name, audio in conditions.items()
        }
    return report


def summary_table(report: dict, splits) -> str:
    """Markdown: WER per judge for original audio and each vocoder, with the ratio to the original."""
    judges = list(report[splits[0]]["original"]["judges"])
    lines = ["| split | audio | " + " | ".join(f"{j} WER (x original)" for j in judges) + " |",
             "|---|---|" + "---|" * len(judges)]
    for split in splits:
        for condition, result in report[split].items():
            cells = []
            for name in judges:
                wer, base = result["judges"][name]["wer"], report[split]["original"]["judges"][name]["wer"]
                cells.append(f"{100 * wer:.1f}% ({wer / base:.2f}x)" if base else f"{100 * wer:.1f}%")
            lines.append(f"| {split} | {condition} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="dualspeechlm-train-codec", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default="data/corpus", type=Path)
    parser.add_argument("--output-dir", default="models/mel-codec", type=Path)
    parser.add_argument("--whisper", default="models/whisper-tiny.en", type=Path, help="the judge's Whisper folder")
    parser.add_argument("--num-quantizers", type=int, default=MelCodecConfig().num_quantizers)
    parser.add_argument("--codebook-size", type=int, default=MelCodecConfig().codebook_size)
    parser.add_argument("--autoencoder-steps", type=int, default=2000)
    parser.add_argument("--vocoder-steps", type=int, default=1000)
    parser.add_argument("--joint-steps", type=int, default=1500,
                        help="decoder + vocoder on the audio loss")
    parser.add_argument("--joint-lr", type=float, default=5e-4)
    parser.add_argument("--init-from", type=Path, default=None,
                        help="a trained codec folder to go on training (its config wins over the size flags)")
    add_run_arguments(parser, lr=2e-3, eval_limit=100)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    if args.init_from:
        model = MelCodecModel.from_pretrained(args.init_from)
    else:
        model = MelCodecModel(MelCodecConfig(num_quantizers=args.num_quantizers, codebook_size=args.codebook_size))
    config = model.config
    waveforms, _, _ = corpus_waveforms(args.corpus, "train", args.train_limit)
    started = time.perf_counter()
    if not args.init_from:
        with torch.no_grad():  # k-means codebook init on many frames, not just the first batch's
            model.train()
            model.quantize(*model.log_mel(*random_crops(waveforms, 8 * args.batch_size, 2 * config.sampling_rate,
                                                        generator)))
    autoencoder_losses = train_autoencoder(model, waveforms, args.autoencoder_steps, args.batch_size,
                                           2 * config.sampling_rate, args.lr, generator)
    vocoder_losses = train_vocoder(model, waveforms, args.vocoder_steps, args.batch_size,
                                   config.sampling_rate, args.lr, generator)
    joint_losses = train_vocoder(model, waveforms, args.joint_steps, args.batch_size, config.sampling_rate,
                                 args.joint_lr, generator, train_decoder=True)
    training_seconds = time.perf_counter() - started
    model.eval()
    # saved before the (long) judging; its config is saved again with the chosen vocoder
    model.save_pretrained(args.output_dir)

    splits = ("test", "test_unseen_voice")
    judges = speech_judges(args.whisper, args.corpus)
    report = evaluate_round_trips(model, args.corpus, splits, args.eval_limit, judges)
    ratios = {v: max(report[s][v]["judges"][j]["wer"] / max(report[s]["original"]["judges"][j]["wer"], 1e-9)
                     for s in splits for j in judges) for v in VOCODERS}
    model.config.vocoder = min(ratios, key=ratios.get)
    model.config.save_pretrained(args.output_dir)

    table = summary_table(report, splits)
    results = {
        "config": config.to_dict(), "training_seconds": training_seconds,
        "autoencoder_loss": autoencoder_losses, "vocoder_loss": vocoder_losses, "joint_loss": joint_losses,
        "worst_wer_ratio": ratios, "default_vocoder": model.config.vocoder,
        "real_time_factor": report.pop("real_time_factor"),
        "evaluation": {s: {c: {j: {k: v for k, v in r["judges"][j].items() if k != "hypotheses"} for j in judges}
                           for c, r in report[s].items()} for s in splits},
    }
    (args.output_dir / "training_report.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.output_dir / "training_report.md").write_text(
        f"# Mel codec round trips\n\ntrained {training_seconds / 60:.1f} min; default vocoder: "
        f"{model.config.vocoder}\n\n{table}\n")
    print(table)
    print(f"worst WER ratio per vocoder: {ratios}; saved {args.output_dir} (default vocoder {model.config.vocoder})")


if __name__ == "__main__":
    main()
