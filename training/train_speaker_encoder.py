"""Train the 512-d speaker encoder from scratch and evaluate it on the corpus.

The corpus has only a handful of training voices, too few for an embedding that must place an unseen voice
well, so the recipe synthesizes extra espeak-ng speakers: accent x variant pairs (one random rate
and pitch each), speaking grammar sentences that are not in any validation or test split. The corpus speaks
English with flite and festival voices, so none of them is a corpus voice, least of all the unseen one.

Loss: additive angular margin softmax (AAM-softmax / ArcFace) over all training speakers, on random
1-2.5 s crops of precomputed log-mel features; the margin ramps up over the first fifth of
training. Evaluation embeds whole clips of the corpus `speech` config:

- identification: nearest enrolment centroid (cosine); centroids from the `validation` split,
  scored on `test` (the seen voices); and a version adding the unseen voice, enrolled on
  the first half of `test_unseen_voice` and scored on the second half;
- EER over all same/different-voice pairs of `test` plus an equal share of the unseen voice, and
  over the unseen voice alone against the seen voices (its own pairs vs its pairs with `test`);
- mean cosine of same-voice and different-voice pairs;
- the same numbers for the untrained (randomly initialised) network, as a floor.

    python -m dualspeechlm.training.train_speaker_encoder --corpus data/corpus \
        --output-dir models/speaker-encoder

writes the model folder (config.json, model.safetensors and the model code, loadable with
`AutoModel.from_pretrained(folder, trust_remote_code=True)`) and `report.json` / `report.md` in it.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from dualspeechlm.processing.corpus import (
    SAMPLING_RATE,
    SPLITS,
    UNSEEN_VOICE,
    Voice,
    corpus_audio,
    grammar,
    synthesize_many,
)
from dualspeechlm.processing.corpus.espeak import installed
from dualspeechlm.speaker_encoder import SpeakerEncoderConfig, SpeakerEncoderModel

ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
           "en-us-nyc", "en-029")
# espeak-ng variants that sound like a person (no robots, whispers, croaks or "demonic").
VARIANTS = (
    "m1 m2 m3 m4 m5 m6 m7 m8 f1 f2 f3 f4 f5 klatt klatt2 klatt3 klatt4 klatt6 adam Alex Alicia "
    "Andrea Andy Annie antonio aunty belinda benjamin boris caleb david Denis Diogo ed edward "
    "edward2 Gene Gene2 gustave Henrique Hugo iven iven2 iven3 iven4 Jacky john Lee linda "
    "marcelo Marco Mario max Michael michel miguel Mike Nguyen norbert pablo paul pedro quincy rob "
    "robert sandro shelby steph steph2 steph3 travis victor zac anika grandma grandpa"
).split()


# --- data ------------------------------------------------------------------------------------

def held_out_texts(corpus: str | Path) -> set[str]:
    """Every text of every validation / test split of the corpus (from its manifest)."""
    manifest = Path(corpus) / "manifest.json"
    texts = set()
    if manifest.is_file():
        for utterance in json.loads(manifest.read_text())["utterances"]:
            if utterance["split"] != "train":
                texts.add(utterance["text"])
    for split in SPLITS[1:]:  # the speech texts as well, in case the manifest is missing
        file = next((Path(corpus) / "speech").glob(f"{split}-*.parquet"), None)
        if file is not None:
            texts |= set(pq.read_table(file, columns=["text"]).column("text").to_pylist())
    return texts


def extra_voices(count: int, seed: int) -> list[Voice]:
    """`count` synthetic espeak-ng speakers, each a distinct accent x variant pair with its own rate and pitch (the
    corpus speaks English with flite and festival only, so none is a corpus voice, least of all the unseen one)."""
    installed_languages, installed_variants = installed(""), installed("variant")
    pairs = [(accent, variant) for accent in ACCENTS for variant in VARIANTS
             if accent in installed_languages and variant in installed_variants]
    if count > len(pairs):
        raise ValueError(f"only {len(pairs)} accent x variant pairs are available, asked for {count} speakers")
    rng = random.Random(seed)
    voices = []
    for accent, variant in rng.sample(pairs, count):
        voices.append(Voice(f"x_{accent}_{variant}".lower(), "espeak-ng", f"{accent}+{variant}",
                            rate=rng.randint(135, 195) / 175, pitch=rng.randint(25, 75) / 50))
    return voices


def build_training_set(corpus: str | Path, extra_speakers: int, clips_per_extra: int, corpus_clips_per_voice: int,
                       seed: int, workers: int, progress: bool = True) -> tuple[list[np.ndarray], list[str], dict]:
    """Clips and speaker names: corpus train clips of the corpus voices plus synthesized extra speakers."""
    rng = random.Random(seed)
    audio, speakers = [], []
    if corpus_clips_per_voice > 0:
        train = corpus_audio(corpus, "train")
        by_voice: dict[str, list[int]] = {}
        for index, speaker in enumerate(train["speaker"]):
            by_voice.setdefault(speaker, []).append(index)
        if UNSEEN_VOICE.name in by_voice:
            raise ValueError(f"the corpus train split contains the unseen voice {UNSEEN_VOICE.name}")
        for speaker, indices in sorted(by_voice.items()):
            for index in rng.sample(indices, min(corpus_clips_per_voice, len(indices))):
                audio.append(train["audio"][index])
                speakers.append(speaker)
    voices = extra_voices(extra_speakers, seed) if extra_speakers > 0 else []
    if voices:
        excluded = held_out_texts(corpus)
        pool = [s for s in grammar.unique_sentences(random.Random(seed + 1), 4000) if s not in excluded]
        jobs = [(text, voice) for voice in voices for text in rng.sample(pool, clips_per_extra)]
        audio += synthesize_many(jobs, workers, progress)
        speakers += [voice.name for _, voice in jobs]
    summary = {
        "corpus_voices": sorted({s for s in speakers if not s.startswith("x_")}),
        "corpus_clips": sum(not s.startswith("x_") for s in speakers),
        "extra_voices": [asdict(v) for v in voices],
        "extra_clips": sum(s.startswith("x_") for s in speakers),
        "speakers": len(set(speakers)),
        "clips": len(audio),
        "hours": round(sum(len(a) for a in audio) / SAMPLING_RATE / 3600, 3),
    }
    return audio, speakers, summary


@torch.no_grad()
def log_mel_features(model: SpeakerEncoderModel, audio: list[np.ndarray], batch_size: int = 32) -> list[torch.Tensor]:
    """Each clip's log-mel [frames, mel bins], computed once with the model's own front end."""
    features = []
    for start in range(0, len(audio), batch_size):
        chunk = [torch.as_tensor(a, dtype=torch.float32) for a in audio[start : start + batch_size]]
        lengths = torch.tensor([len(a) for a in chunk])
        batch = nn.utils.rnn.pad_sequence(chunk, batch_first=True)
        log_mel, frame_lengths = model.compute_log_mel(batch, lengths)
        features += [log_mel[i, : frame_lengths[i]].clone() for i in range(len(chunk))]
    return features


# --- loss and training -----------------------------------------------------------------------

class AAMSoftmax(nn.Module):
    """Additive angular margin softmax: logits s*cos(theta + m) for the true class, s*cos(theta) else."""

    def __init__(self, embedding_size: int, num_classes: int, scale: float = 30.0, margin: float = 0.2):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_size))
        nn.init.xavier_uniform_(self.weight)
        self.scale, self.margin = scale, margin

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, margin: float | None = None) -> torch.Tensor:
        margin = self.margin if margin is None else margin
        cosine = F.linear(F.normalize(embeddings), F.normalize(self.weight)).clamp(-1 + 1e-7, 1 - 1e-7)
        target = cosine.gather(1, labels[:, None])
        with_margin = torch.cos(torch.acos(target) + margin)
        # beyond theta = pi - m, cos(theta + m) would grow again: fall back to a linear penalty
        with_margin = torch.where(target > math.cos(math.pi - margin), with_margin,
                                  target - math.sin(math.pi - margin) * margin)
        logits = cosine.scatter(1, labels[:, None], with_margin) * self.scale
        return F.cross_entropy(logits, labels)


def _crop_batch(features: list[torch.Tensor], indices: list[int], crop: int, rng: random.Random):
    """Random `crop`-frame windows of the chosen clips (shorter clips whole), zero-padded."""
    pieces = []
    for index in indices:
        clip = features[index]
        if len(clip) > crop:
            start = rng.randrange(len(clip) - crop + 1)
            clip = clip[start : start + crop]
        pieces.append(clip)
    lengths = torch.tensor([len(p) for p in pieces])
    return nn.utils.rnn.pad_sequence(pieces, batch_first=True), lengths


def train_speaker_encoder(model: SpeakerEncoderModel, features: list[torch.Tensor], speakers: list[str], *,
                          steps: int, batch_size: int = 48, learning_rate: float = 3e-3, weight_decay: float = 1e-4,
                          min_crop: int = 80, max_crop: int = 200, margin: float = 0.2, scale: float = 30.0,
                          max_seconds: float | None = None, seed: int = 0, progress: bool = True) -> list[float]:
    """Train `model` with AAM-softmax over `speakers` on random crops of `features` (log-mel, one
    per clip); batches draw speakers uniformly, then one clip each. Returns the loss per step.

    Training progress is the larger of steps done / `steps` and seconds spent / `max_seconds`:
    the learning rate (5% warm-up, then cosine to zero) and the margin (ramped up over the first
    fifth) follow it, and training ends when it reaches 1. So on a busy machine the run finishes
    on time with fewer steps, still with a fully decayed learning rate; `max_seconds=None` makes
    it purely step-based (and reproducible).
    """
    if steps < 1:
        raise ValueError("steps must be at least 1")
    names = sorted(set(speakers))
    if len(names) < 2:
        raise ValueError("training needs at least two speakers")
    label_of = {name: i for i, name in enumerate(names)}
    clips_of: list[list[int]] = [[] for _ in names]
    for index, speaker in enumerate(speakers):
        clips_of[label_of[speaker]].append(index)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    head = AAMSoftmax(model.config.embedding_size, len(names), scale=scale, margin=margin)
    parameters = list(model.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=weight_decay)
    warmup, warmup_steps = 0.05, max(1, round(0.05 * steps))
    model.train()
    losses = []
    started = time.perf_counter()
    bar = tqdm(total=steps, desc="speaker encoder", unit="step", disable=not progress)
    for step in range(steps):
        done = step / steps
        if max_seconds:
            done = max(done, (time.perf_counter() - started) / max_seconds)
        if done >= 1:
            break
        if step < warmup_steps:
            rate = (step + 1) / warmup_steps
        else:
            rate = 0.5 * (1 + math.cos(math.pi * min(1.0, max(0.0, (done - warmup) / (1 - warmup)))))
        for group in optimizer.param_groups:
            group["lr"] = learning_rate * rate
        labels = [rng.randrange(len(names)) for _ in range(batch_size)]
        indices = [rng.choice(clips_of[label]) for label in labels]
        batch, lengths = _crop_batch(features, indices, rng.randint(min_crop, max_crop), rng)
        embeddings = model.embed_log_mel(batch, lengths).unnormalized_embeddings
        # margin warm-up: plain softmax first, the full margin from a fifth of the way on
        loss = head(embeddings, torch.tensor(labels), margin=margin * min(1.0, done / 0.2))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(parameters, 5.0)
        optimizer.step()
        losses.append(loss.item())
        bar.update()
        if step % 10 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-10:]):.3f}", lr=f"{optimizer.param_groups[0]['lr']:.1e}")
    bar.close()
    model.eval()
    return losses


# --- evaluation ------------------------------------------------------------------------------

def equal_error_rate(scores: np.ndarray, same: np.ndarray) -> float:
    """EER of verification trials: the error rate where false accepts equal false rejects."""
    scores, same = np.asarray(scores, dtype=np.float64), np.asarray(same, dtype=bool)
    if same.all() or not same.any():
        raise ValueError("EER needs both same-voice and different-voice trials")
    order = np.argsort(-scores, kind="stable")
    same = same[order]
    # accept the top k trials for k = 0..n: false accepts among them, false rejects outside
    false_accept = np.concatenate([[0], np.cumsum(~same)]) / (~same).sum()
    false_reject = 1 - np.concatenate([[0], np.cumsum(same)]) / same.sum()
    k = int(np.argmin(np.abs(false_accept - false_reject)))
    return float((false_accept[k] + false_reject[k]) / 2)


def _pair_scores(emb: torch.Tensor, labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Cosine and same-voice flag of every unordered pair."""
    rows, cols = torch.triu_indices(len(labels), len(labels), offset=1)
    scores = (emb @ emb.T)[rows, cols].numpy()
    names = np.asarray(labels)
    return scores, names[rows.numpy()] == names[cols.numpy()]


def _identify(enrol: torch.Tensor, enrol_labels: list[str], probe: torch.Tensor, probe_labels: list[str]) -> float:
    names = sorted(set(enrol_labels))
    centroids = torch.stack([F.normalize(enrol[[i for i, s in enumerate(enrol_labels) if s == n]].mean(0), dim=0)
                             for n in names])
    predicted = (probe @ centroids.T).argmax(-1).tolist()
    return float(np.mean([names[p] == label for p, label in zip(predicted, probe_labels)]))


def evaluate_embeddings(embeddings: dict[str, torch.Tensor], speakers: dict[str, list[str]]) -> dict:
    """Identification, EER and cosine statistics from the embeddings of validation / test /
    test_unseen_voice clips (see the module docstring for the protocol)."""
    val, val_spk = embeddings["validation"], speakers["validation"]
    test, test_spk = embeddings["test"], speakers["test"]
    unseen, unseen_spk = embeddings["test_unseen_voice"], speakers["test_unseen_voice"]
    half = len(unseen) // 2
    per_voice = max(1, round(len(test) / len(set(test_spk))))  # the unseen voice's share in "all" trials
    pooled = torch.cat([test, unseen[:per_voice]])
    pooled_spk = test_spk + unseen_spk[:per_voice]
    all_scores, all_same = _pair_scores(pooled, pooled_spk)
    within_scores, _ = _pair_scores(unseen, unseen_spk)
    cross_scores = (unseen @ test.T).flatten().numpy()
    seen_names = sorted(set(test_spk))
    centroid = F.normalize(unseen.mean(0), dim=0)
    to_seen = {n: float(centroid @ F.normalize(test[[i for i, s in enumerate(test_spk) if s == n]].mean(0), dim=0))
               for n in seen_names}
    closest = max(to_seen, key=to_seen.get)
    return {
        "identification_accuracy_seen": _identify(val, val_spk, test, test_spk),
        "identification_accuracy_per_voice": {
            name: _identify(val, val_spk, test[[i for i, s in enumerate(test_spk) if s == name]],
                            [name] * test_spk.count(name))
            for name in seen_names},
        "identification_accuracy_with_unseen": _identify(
            torch.cat([val, unseen[:half]]), val_spk + unseen_spk[:half],
            torch.cat([test, unseen[half:]]), test_spk + unseen_spk[half:]),
        "eer_all": equal_error_rate(all_scores, all_same),
        "eer_unseen_vs_rest": equal_error_rate(np.concatenate([within_scores, cross_scores]),
                                               np.r_[np.ones(len(within_scores), bool),
                                                     np.zeros(len(cross_scores), bool)]),
        "mean_cosine_same": float(all_scores[all_same].mean()),
        "mean_cosine_different": float(all_scores[~all_same].mean()),
        "mean_cosine_unseen_same": float(within_scores.mean()),
        "mean_cosine_unseen_vs_seen": float(cross_scores.mean()),
        "unseen_closest_seen_voice": closest,
        "unseen_closest_seen_cosine": to_seen[closest],
        "trials_all": {"same": int(all_same.sum()), "different": int((~all_same).sum())},
        "trials_unseen": {"same": len(within_scores), "different": len(cross_scores)},
    }


def evaluate(model: SpeakerEncoderModel, data: dict[str, dict], batch_size: int = 32) -> dict:
    model.eval()
    embeddings = {split: model.embed(data[split]["audio"], sampling_rate=SAMPLING_RATE, batch_size=batch_size)
                  for split in SPLITS[1:]}
    return evaluate_embeddings(embeddings, {split: data[split]["speaker"] for split in SPLITS[1:]})


# --- report ----------------------------------------------------------------------------------

METRIC_ROWS = (
    ("identification_accuracy_seen", "identification accuracy, seen voices (test vs validation centroids)", "{:.1%}"),
    ("identification_accuracy_with_unseen", "identification accuracy, seen voices + the unseen one", "{:.1%}"),
    ("eer_all", "EER, all same/different-voice pairs (test + unseen)", "{:.2%}"),
    ("eer_unseen_vs_rest", f"EER, unseen voice ({UNSEEN_VOICE.name}) vs the seen voices", "{:.2%}"),
    ("mean_cosine_same", "mean cosine, same voice", "{:.3f}"),
    ("mean_cosine_different", "mean cosine, different voices", "{:.3f}"),
    ("mean_cosine_unseen_same", "mean cosine, unseen voice with itself", "{:.3f}"),
    ("mean_cosine_unseen_vs_seen", "mean cosine, unseen voice vs seen voices", "{:.3f}"),
    ("unseen_closest_seen_cosine", "cosine of unseen centroid to its closest seen voice", "{:.3f}"),
)


def format_markdown(report: dict) -> str:
    trained, untrained = report["metrics"], report.get("metrics_untrained")
    lines = ["# Speaker encoder evaluation", "",
             f"Corpus `{report['corpus']}`, `speech` config; model `{report['output_dir']}` "
             f"({report['parameters']:,} parameters, {report['config']['embedding_size']}-d embeddings).", "",
             "| metric | trained |" + (" untrained |" if untrained else ""),
             "|---|---|" + ("---|" if untrained else "")]
    for key, label, fmt in METRIC_ROWS:
        lines.append(f"| {label} | {fmt.format(trained[key])} |"
                     + (f" {fmt.format(untrained[key])} |" if untrained else ""))
    lines += ["", f"Closest seen voice to the unseen voice: `{trained['unseen_closest_seen_voice']}`.", "",
              f"Trials: all pairs {trained['trials_all']['same']} same / {trained['trials_all']['different']} "
              f"different; unseen {trained['trials_unseen']['same']} same / {trained['trials_unseen']['different']} "
              "different.", ""]
    data, training = report["data"], report["training"]
    lines += ["## Training", "",
              f"- data: {data['speakers']} speakers, {data['clips']} clips ({data['hours']} h): "
              f"{data['corpus_clips']} corpus train clips of the {len(data['corpus_voices'])} corpus voices + "
              f"{data['extra_clips']} clips of {len(data['extra_voices'])} extra espeak-ng speakers (never the unseen "
              f"voice {UNSEEN_VOICE.name}, never a validation/test sentence)",
              f"- AAM-softmax (scale {training['scale']}, margin {training['margin']}), {training['steps']} steps "
              f"(of at most {training['max_steps']}, time budget {training['max_train_seconds']:.0f} s) x "
              f"batch {training['batch_size']}, crops {training['min_crop']}-{training['max_crop']} frames, "
              f"AdamW lr {training['learning_rate']}",
              f"- loss {training['loss_first']:.3f} (first 10 steps) -> {training['loss_last']:.3f} (last 10 steps)",
              f"- time: data {training['data_seconds']:.0f} s, training {training['train_seconds']:.0f} s, "
              f"evaluation {training['eval_seconds']:.0f} s, total {training['total_seconds']:.0f} s "
              f"({training['threads']} threads)", ""]
    return "\n".join(lines)


# --- CLI -------------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--corpus", default="data/corpus", help="built corpus folder (dualspeechlm-data build)")
    parser.add_argument("--output-dir", default="models/speaker-encoder", help="where the model and report go")
    parser.add_argument("--steps", type=int, default=1000, help="training steps (at most)")
    parser.add_argument("--max-train-seconds", type=float, default=270,
                        help="time budget of the training loop: the schedule follows whichever of steps or time "
                             "runs out first (0: steps only, reproducible)")
    parser.add_argument("--batch-size", type=int, default=48, help="crops per step (one speaker each)")
    parser.add_argument("--learning-rate", type=float, default=3e-3,
                        help="AdamW peak learning rate (5%% warm-up, cosine decay)")
    parser.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay")
    parser.add_argument("--margin", type=float, default=0.2, help="AAM-softmax angular margin (radians)")
    parser.add_argument("--scale", type=float, default=30.0, help="AAM-softmax logit scale")
    parser.add_argument("--min-crop", type=int, default=80, help="shortest training crop in frames (10 ms)")
    parser.add_argument("--max-crop", type=int, default=200, help="longest training crop in frames")
    parser.add_argument("--extra-speakers", type=int, default=200,
                        help="synthesized espeak-ng speakers besides the corpus voices")
    parser.add_argument("--clips-per-extra-speaker", type=int, default=8, help="sentences each extra speaker says")
    parser.add_argument("--corpus-clips-per-voice", type=int, default=60, help="corpus train clips per corpus voice")
    parser.add_argument("--hidden-size", type=int, default=None, help="override SpeakerEncoderConfig.hidden_size")
    parser.add_argument("--stats-size", type=int, default=None, help="override SpeakerEncoderConfig.stats_size")
    parser.add_argument("--num-mel-bins", type=int, default=None, help="override SpeakerEncoderConfig.num_mel_bins")
    parser.add_argument("--seed", type=int, default=0, help="seed of voices, sentences, initialisation and batches")
    parser.add_argument("--workers", type=int, default=2, help="parallel espeak-ng processes")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1 is fastest for this small network on a shared 2-core machine: "
                             "two threads spin-wait on each other when other jobs hold a core)")
    parser.add_argument("--skip-untrained-baseline", action="store_true", help="do not evaluate the untrained network")
    parser.add_argument("--evaluate-only", action="store_true", help="evaluate the model already in --output-dir")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    output_dir = Path(args.output_dir)
    progress = not args.no_progress

    evaluation_data = {split: corpus_audio(args.corpus, split) for split in SPLITS[1:]}
    overrides = {k: v for k, v in (("hidden_size", args.hidden_size), ("stats_size", args.stats_size),
                                   ("num_mel_bins", args.num_mel_bins)) if v is not None}
    if args.evaluate_only:
        model = SpeakerEncoderModel.from_pretrained(output_dir)
        previous = output_dir / "report.json"
        report = json.loads(previous.read_text()) if previous.is_file() else {}
        report["metrics"] = evaluate(model, evaluation_data)
        if "training" in report:  # a report of this recipe: refresh it
            previous.write_text(json.dumps(report, indent=1, default=str) + "\n")
            (output_dir / "report.md").write_text(format_markdown(report))
        print(json.dumps(report["metrics"], indent=1))
        return report

    config = SpeakerEncoderConfig(**overrides)
    model = SpeakerEncoderModel(config)
    untrained = None if args.skip_untrained_baseline else evaluate(model, evaluation_data)

    audio, speakers, data_summary = build_training_set(
        args.corpus, args.extra_speakers, args.clips_per_extra_speaker, args.corpus_clips_per_voice,
        args.seed, args.workers, progress)
    features = log_mel_features(model, audio)
    del audio
    data_seconds = time.perf_counter() - started
    print(f"training data: {data_summary['speakers']} speakers, {data_summary['clips']} clips, "
          f"{data_summary['hours']} h ({data_seconds:.0f} s)")

    train_started = time.perf_counter()
    losses = train_speaker_encoder(
        model, features, speakers, steps=args.steps, batch_size=args.batch_size, learning_rate=args.learning_rate,
        weight_decay=args.weight_decay, min_crop=args.min_crop, max_crop=args.max_crop, margin=args.margin,
        scale=args.scale, max_seconds=args.max_train_seconds or None, seed=args.seed, progress=progress)
    train_seconds = time.perf_counter() - train_started

    eval_started = time.perf_counter()
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    metrics = evaluate(model, evaluation_data)
    eval_seconds = time.perf_counter() - eval_started
    report = {
        "corpus": str(args.corpus),
        "output_dir": str(output_dir),
        "config": model.config.to_dict(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "metrics": metrics,
        "metrics_untrained": untrained,
        "data": data_summary,
        "training": {
            "loss": "aam_softmax", "steps": len(losses), "max_steps": args.steps,
            "max_train_seconds": args.max_train_seconds, "batch_size": args.batch_size,
            "learning_rate": args.learning_rate, "weight_decay": args.weight_decay, "margin": args.margin,
            "scale": args.scale, "min_crop": args.min_crop, "max_crop": args.max_crop, "seed": args.seed,
            "threads": args.threads,
            "loss_first": float(np.mean(losses[:10])), "loss_last": float(np.mean(losses[-10:])),
            "loss_curve": [round(float(np.mean(losses[i : i + 10])), 4) for i in range(0, len(losses), 10)],
            "data_seconds": round(data_seconds, 1), "train_seconds": round(train_seconds, 1),
            "eval_seconds": round(eval_seconds, 1), "total_seconds": round(time.perf_counter() - started, 1),
        },
        "argv": vars(args),
    }
    (output_dir / "report.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    (output_dir / "report.md").write_text(format_markdown(report))
    print(format_markdown(report))


if __name__ == "__main__":
    main()
