"""How much of the words do USTokens carry? A character-CTC probe, on the tokens and on the features they quantize.

    python bench/probe_words.py --input ustokens --ustokenizer models/ustokenizer --steps 500
    python bench/probe_words.py --input encoder --steps 500
    python bench/probe_words.py --input kmeans --steps 500
    python bench/probe_words.py --input kmeans --shape-steps 1000 --steps 500
    python bench/probe_words.py --input ustokens --save-inputs ust.pt   # then, e.g. on a GPU machine:
    python bench/probe_words.py --input saved --load-inputs ust.pt --steps 6000 --device cuda

A small transformer encoder (4 layers, 256 wide, frames doubled so CTC has room for every character) is
trained from scratch with character CTC on the `speech` training split and scored (greedy CTC, WER / CER)
on the first `--eval-limit` utterances of each test split every `--eval-every` steps. Inputs come from the
frozen Whisper encoder's outputs that stage 1 caches under `--cache-dir` (`speech-<split>`):
- `ustokens`: the USToken ids `--ustokenizer` makes of them (its small convs + codebook), through a fresh
  embedding;
- `encoder`: the outputs themselves, averaged from 50 Hz to the tokens' 25 Hz, through LayerNorm + Linear;
- `kmeans`: those 25 Hz features quantized by plain k-means (`--kmeans-codes`, fit on training frames),
  through a fresh embedding: the untrained baseline a learned 1024-code tokenizer should beat. With
  `--shape-steps`, k-means quantizes the hidden states of a small local CTC model trained on the features first
  (`LocalShaper`): how much a quantizer keeps when supervision has shaped its space. `--normalize` standardizes
  the features per utterance before either.
The same probe on each says how much the quantization loses; its absolute WER says how far a small model
gets in so many steps. `--save-inputs` writes the prepared token ids and texts (a few MB, not the features)
so that a longer run can go where compute is (`--input saved --load-inputs`, `--device`).
"""

import argparse
import random
import time

import jiwer
import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from dualspeechlm.modeling_ustokenizer import USTokenizerModel
from dualspeechlm.training.understanding import greedy_ctc_texts


def load_rows(cache_dir: str, split: str, limit: int | None = None) -> list[tuple[torch.Tensor, str]]:
    """(Whisper encoder output `[frames, d_model]` at 50 Hz, text) per utterance of the cached `speech` split."""
    import datasets  # only here: a run on saved inputs needs neither datasets nor the cache
    rows = datasets.load_from_disk(f"{cache_dir}/speech-{split}").with_format("numpy")
    rows = rows.select(range(min(limit or len(rows), len(rows))))
    return [(torch.from_numpy(np.asarray(r["encoder_hidden_states"], dtype=np.float32)).view(r["num_frames"], -1),
             str(r["text"])) for r in rows]  # str: numpy strings would need pickle in `--save-inputs` files


def pooled(rows):
    """50 Hz frames -> their pairwise means at the tokens' 25 Hz."""
    return [(x[: len(x) // 2 * 2].view(-1, 2, x.shape[1]).mean(1), text) for x, text in rows]


def utterance_normalized(rows):
    """Each feature standardized over the utterance's frames: removes what is constant in a recording (voice, pitch)."""
    return [((x - x.mean(0)) / (x.std(0) + 1e-5), text) for x, text in rows]


@torch.no_grad()
def tokenized(rows, ustokenizer):
    """50 Hz frames -> the USTokenizer's ids `[tokens]`."""
    out = []
    for x, text in rows:
        encoded = ustokenizer.encode_cached(x[None], torch.tensor([len(x)]))
        out.append((encoded.ids[0, : int(encoded.lengths[0])], text))
    return out


def kmeans(frames: torch.Tensor, codes: int, iterations: int = 20, seed: int = 0) -> torch.Tensor:
    """Lloyd's k-means on `[N, d]` frames -> centroids `[codes, d]` (empty clusters re-drawn from the frames)."""
    generator = torch.Generator().manual_seed(seed)
    centroids = frames[torch.randperm(len(frames), generator=generator)[:codes]].clone()
    for _ in range(iterations):
        nearest = torch.cdist(frames, centroids).argmin(-1)
        counts = torch.bincount(nearest, minlength=codes)
        sums = torch.zeros_like(centroids).index_add_(0, nearest, frames)
        empty = counts == 0
        centroids = torch.where(empty[:, None], frames[torch.randint(len(frames), (codes,), generator=generator)],
                                sums / counts.clamp(min=1)[:, None])
    return centroids


def kmeans_of_rows(rows, codes: int, max_frames: int = 100_000) -> torch.Tensor:
    """Centroids `[codes, d]` fit on a seeded sample of at most `max_frames` of the rows' frames."""
    frames = torch.cat([x for x, _ in rows])
    return kmeans(frames[torch.randperm(len(frames), generator=torch.Generator().manual_seed(0))[:max_frames]], codes)


def quantize(rows, centroids: torch.Tensor):
    return [(torch.cdist(x, centroids).argmin(-1), text) for x, text in rows]


class CTCProbe(nn.Module):
    def __init__(self, source: str, input_size: int, num_labels: int, hidden: int = 256, layers: int = 4):
        super().__init__()
        self.input = (nn.Embedding(input_size, hidden) if source != "encoder"
                      else nn.Sequential(nn.LayerNorm(input_size), nn.Linear(input_size, hidden)))
        self.positions = nn.Embedding(2048, hidden)
        layer = nn.TransformerEncoderLayer(hidden, 4, 4 * hidden, 0.1, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.output = nn.Linear(hidden, num_labels)

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor):
        """inputs `[batch, frames(, d)]` -> log-probabilities `[batch, 2 * frames, labels]` and their lengths."""
        inputs, lengths = inputs.repeat_interleave(2, 1), 2 * lengths
        positions = torch.arange(inputs.shape[1], device=inputs.device)
        hidden = self.input(inputs) + self.positions(positions)[None]
        padding = positions[None] >= lengths[:, None]
        return self.output(self.encoder(hidden, src_key_padding_mask=padding)).log_softmax(-1), lengths


class LocalShaper(nn.Module):
    """`--shape-steps`: LayerNorm + Linear + two residual convs (+-2 frames) and a character CTC head with two slots
    per frame, trained on the continuous features; k-means then quantizes its hidden states (`embed`) instead of the
    features: supervision shapes the space before quantization, as stage 1's transcript CTC does for the tokenizer."""

    def __init__(self, input_size: int, num_labels: int, hidden: int = 256):
        super().__init__()
        self.num_labels = num_labels
        self.input = nn.Sequential(nn.LayerNorm(input_size), nn.Linear(input_size, hidden))
        self.convs = nn.ModuleList(nn.Conv1d(hidden, hidden, 3, padding=1) for _ in range(2))
        self.output = nn.Linear(hidden, 2 * num_labels)

    def embed(self, inputs: torch.Tensor) -> torch.Tensor:
        """`[batch, frames, input_size]` -> `[batch, frames, hidden]`."""
        hidden = self.input(inputs).transpose(1, 2)
        for conv in self.convs:
            hidden = hidden + nn.functional.gelu(conv(hidden))
        return hidden.transpose(1, 2)

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor):
        logits = self.output(self.embed(inputs)).view(inputs.shape[0], -1, self.num_labels)
        return logits.log_softmax(-1), 2 * lengths


def collate(rows, device="cpu"):
    return (pad_sequence([x for x, _ in rows], batch_first=True).to(device),
            torch.tensor([len(x) for x, _ in rows], device=device))


def greedy(log_probs: torch.Tensor, lengths: torch.Tensor, alphabet: list[str]) -> list[str]:
    return [text or "-" for text in greedy_ctc_texts(log_probs, lengths, alphabet)]  # jiwer refuses empty texts


@torch.no_grad()
def score(model, rows, alphabet, device="cpu") -> tuple[float, float]:
    model.eval()
    hypotheses = []
    for start in range(0, len(rows), 32):
        hypotheses += greedy(*model(*collate(rows[start : start + 32], device)), alphabet)
    model.train()
    references = [text for _, text in rows]
    return jiwer.wer(references, hypotheses), jiwer.cer(references, hypotheses)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", choices=("ustokens", "encoder", "kmeans", "saved"), required=True)
    parser.add_argument("--cache-dir", default="data/encoder_cache")
    parser.add_argument("--ustokenizer", default="models/ustokenizer", help="the tokenizer `--input ustokens` probes")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--eval-every", type=int, default=125)
    parser.add_argument("--eval-limit", type=int, default=100)
    parser.add_argument("--train-limit", type=int, help="train on the first N utterances only (how much data matters)")
    parser.add_argument("--kmeans-codes", type=int, default=1024)
    parser.add_argument("--kmeans-frames", type=int, default=100_000, help="training frames k-means is fit on")
    parser.add_argument("--normalize", action="store_true",
                        help="standardize the features per utterance first (`encoder` / `kmeans`)")
    parser.add_argument("--shape-steps", type=int, default=0,
                        help="`kmeans`: quantize the hidden states of a local CTC shaper trained this many steps")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--save-inputs", help="write the prepared ids + texts here (ustokens / kmeans) and stop")
    parser.add_argument("--load-inputs", help="the file `--save-inputs` wrote (with `--input saved`)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    random.seed(0)

    train, tests = prepared_inputs(args)
    if args.save_inputs:
        torch.save({"train": train, "tests": tests}, args.save_inputs)
        return
    alphabet = alphabet_of(train)
    every_row = [row for rows in (train, *tests.values()) for row in rows]
    input_size = train[0][0].shape[1] if args.input == "encoder" else 1 + max(int(x.max()) for x, _ in every_row)
    model = CTCProbe(args.input, input_size, len(alphabet) + 1).to(args.device)
    train_ctc(model, train, tests, alphabet, args.steps, args.batch_size, args.eval_every, args.device)


def alphabet_of(rows) -> list[str]:
    return sorted(set("".join(text for _, text in rows)))


def train_ctc(model, train, tests, alphabet, steps: int, batch_size: int, eval_every: int, device="cpu") -> None:
    """AdamW (one-cycle 1e-3) on character CTC; prints a Markdown row of WER / CER per test split every `eval_every`."""
    label = {c: i + 1 for i, c in enumerate(alphabet)}  # 0: the CTC blank
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 1e-3, total_steps=steps, pct_start=0.1)
    ctc = nn.CTCLoss(zero_infinity=True)
    print("| step | minutes | train CTC loss | " + " | ".join(f"{s} WER / CER" for s in tests) + " |")
    print("|---|---|---|" + "---|" * len(tests))
    started = time.perf_counter()
    for step in range(1, steps + 1):
        rows = random.sample(train, batch_size)
        log_probs, lengths = model(*collate(rows, device))
        targets = [torch.tensor([label[c] for c in text]) for _, text in rows]
        loss = ctc(log_probs.transpose(0, 1), torch.cat(targets).to(device), lengths,
                   torch.tensor([len(t) for t in targets], device=device))
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % eval_every == 0 or step == steps:
            cells = [f"{100 * w:.1f}% / {100 * c:.1f}%" for w, c in (score(model, rows, alphabet, device)
                                                                    for rows in tests.values())]
            print(f"| {step} | {(time.perf_counter() - started) / 60:.1f} | {loss.item():.3f} | " + " | ".join(cells) + " |",
                  flush=True)


def prepared_inputs(args):
    """(train rows, {test split: rows}) of (probe input, text): token ids, features or saved ids."""
    if args.input == "saved":
        saved = torch.load(args.load_inputs)
        return saved["train"], saved["tests"]
    train = load_rows(args.cache_dir, "train", args.train_limit)
    tests = {split: load_rows(args.cache_dir, split, args.eval_limit) for split in ("test", "test_unseen_voice")}
    if args.input == "ustokens":
        ustokenizer = USTokenizerModel.from_pretrained(args.ustokenizer).eval()
        train, tests = tokenized(train, ustokenizer), {split: tokenized(rows, ustokenizer) for split, rows in tests.items()}
    else:
        train, tests = pooled(train), {split: pooled(rows) for split, rows in tests.items()}
        if args.normalize:
            train = utterance_normalized(train)
            tests = {split: utterance_normalized(rows) for split, rows in tests.items()}
        if args.shape_steps:
            alphabet = alphabet_of(train)
            shaper = LocalShaper(train[0][0].shape[1], len(alphabet) + 1)
            print(f"shaper, {args.shape_steps} steps:", flush=True)
            train_ctc(shaper, train, tests, alphabet, args.shape_steps, args.batch_size, args.shape_steps)
            shaper.eval()
            with torch.no_grad():
                shaped = lambda rows: [(shaper.embed(x[None])[0], text) for x, text in rows]  # noqa: E731
                train, tests = shaped(train), {split: shaped(rows) for split, rows in tests.items()}
    if args.input == "kmeans":
        centroids = kmeans_of_rows(train, args.kmeans_codes, args.kmeans_frames)
        train, tests = quantize(train, centroids), {split: quantize(rows, centroids) for split, rows in tests.items()}
        usage = torch.bincount(torch.cat([x for x, _ in tests["test"]]), minlength=args.kmeans_codes)
        probs = usage[usage > 0] / usage.sum()
        print(f"k-means: {int((usage > 0).sum())} of {args.kmeans_codes} codes used on test, "
              f"perplexity {float(torch.exp(-(probs * probs.log()).sum())):.0f}", flush=True)
    return train, tests


if __name__ == "__main__":
    main()
