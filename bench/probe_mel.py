"""Can speech be rendered from these tokens at all? A token -> log-mel probe, judged by Whisper.

    python bench/probe_mel.py --input ustokens --ustokenizer models/ustokenizer --codec models/mel-codec
    python bench/probe_mel.py --input kmeans

A small conv net (token embedding, 2x upsampling to the codec's 50 Hz mel frames, residual convs) is trained
from scratch with L1 to the codec's log-mel on the `speech` training split, then the first `--eval-limit`
`test` utterances are rendered from their tokens by the codec's Griffin-Lim and judged by Whisper, beside the
same Griffin-Lim on the true log-mel. No autoregression and no LLM: the ceiling of how intelligible any speech
written from these tokens can be after so much training. Inputs as `bench/probe_words.py` (`ustokens`: the
`--ustokenizer`'s ids; `kmeans`: plain k-means of the Whisper features).
"""

import argparse
import random
import time

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from dualspeechlm.codecs import load_codec
from dualspeechlm.modeling_ustokenizer import USTokenizerModel
from dualspeechlm.processing.corpus import corpus_audio
from dualspeechlm.training.judge import WhisperJudge
from dualspeechlm.training.metrics import word_error_rate
from probe_words import kmeans_of_rows, load_rows, pooled, quantize, tokenized


class TokensToMel(nn.Module):
    def __init__(self, num_tokens: int, n_mels: int, hidden: int = 256, layers: int = 6):
        super().__init__()
        self.embed = nn.Embedding(num_tokens, hidden)
        self.convs = nn.ModuleList(nn.Sequential(nn.Conv1d(hidden, hidden, 5, padding=2), nn.GELU()) for _ in range(layers))
        self.output = nn.Conv1d(hidden, n_mels, 1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens `[batch, T]` (25 Hz) -> standardised log-mel `[batch, n_mels, 2T]` (50 Hz)."""
        hidden = self.embed(tokens).repeat_interleave(2, 1).transpose(1, 2)
        for conv in self.convs:
            hidden = hidden + conv(hidden)
        return self.output(hidden)


def with_mels(rows, audio, codec):
    """(tokens `[T]`, standardised log-mel `[n_mels, frames]` cut to 2T frames) per utterance."""
    out = []
    with torch.no_grad():
        for (tokens, _), waveform in zip(rows, audio):
            mel, _ = codec.log_mel(torch.from_numpy(waveform)[None], torch.tensor([len(waveform)]))
            frames = min(mel.shape[-1], 2 * len(tokens))
            mel = (mel[0, :, :frames] - codec.config.mel_mean) / codec.config.mel_std
            out.append((tokens[: (frames + 1) // 2], mel))
    return out


def batch_of(items):
    tokens = pad_sequence([t for t, _ in items], batch_first=True)
    frames = torch.tensor([m.shape[-1] for _, m in items])
    mels = pad_sequence([m.T for _, m in items], batch_first=True).transpose(1, 2)
    return tokens, mels, frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", choices=("ustokens", "kmeans"), required=True)
    parser.add_argument("--ustokenizer", default="models/ustokenizer")
    parser.add_argument("--codec", default="models/mel-codec", help="a MelCodecModel folder: log-mel and Griffin-Lim")
    parser.add_argument("--corpus", default="data/corpus")
    parser.add_argument("--cache-dir", default="data/encoder_cache")
    parser.add_argument("--whisper", default="models/whisper-tiny.en")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--eval-limit", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    random.seed(0)

    codec = load_codec(args.codec).eval()
    train, test = load_rows(args.cache_dir, "train"), load_rows(args.cache_dir, "test", args.eval_limit)
    if args.input == "ustokens":
        ustokenizer = USTokenizerModel.from_pretrained(args.ustokenizer).eval()
        train, test = tokenized(train, ustokenizer), tokenized(test, ustokenizer)
    else:
        train, test = pooled(train), pooled(test)
        centroids = kmeans_of_rows(train, 1024)
        train, test = quantize(train, centroids), quantize(test, centroids)
    train_audio, test_audio = corpus_audio(args.corpus, "train"), corpus_audio(args.corpus, "test", limit=args.eval_limit)
    references = test_audio["text"]
    train, test = with_mels(train, train_audio["audio"], codec), with_mels(test, test_audio["audio"], codec)

    model = TokensToMel(1 + max(int(t.max()) for t, _ in train + test), codec.config.n_mels)
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 1e-3, total_steps=args.steps, pct_start=0.1)
    started = time.perf_counter()
    for step in range(1, args.steps + 1):
        tokens, mels, frames = batch_of(random.sample(train, args.batch_size))
        loss = codec.mel_l1(model(tokens)[..., : mels.shape[-1]], mels, frames)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 250 == 0:
            print(f"step {step}: train L1 {loss.item():.3f} (standardised log-mel), "
                  f"{(time.perf_counter() - started) / 60:.1f} min", flush=True)

    model.eval()
    rendered, true = [], []
    with torch.no_grad():
        for tokens, mel in test:
            frames = torch.tensor([mel.shape[-1]])
            predicted = model(tokens[None])[..., : mel.shape[-1]] * codec.config.mel_std + codec.config.mel_mean
            rendered.append(codec.vocode(predicted, frames, "griffin_lim")[0].numpy())
            true.append(codec.vocode(mel[None] * codec.config.mel_std + codec.config.mel_mean, frames, "griffin_lim")[0].numpy())
    judge = WhisperJudge(args.whisper, progress=False)
    print(f"\n| {len(test)} `test` utterances, Griffin-Lim | Whisper WER |\n|---|---|")
    for name, waves in ((f"log-mel from {args.input}", rendered), ("true log-mel", true)):
        print(f"| {name} | {100 * word_error_rate(references, judge.transcribe(waves, codec.sampling_rate)):.1f}% |")


if __name__ == "__main__":
    main()
