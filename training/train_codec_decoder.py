"""Teach a trained mel codec's decoder to read USTokens beside the codes (USToken-aided decoding).

AcousticGPT predicts the codec's first codebook from the USTokens fairly well and the finer ones hardly
better than chance, yet the finer ones carry many of the words. So the decoder is given
the words directly: the USTokens of the speech, embedded and added to the quantized latents (two codec frames
per token), and it learns, with codebook dropout, to render speech from the tokens and the first k codebooks
for every k (0..num_quantizers). Half of those codes are replaced by random ones (`--code-noise`), as AcousticGPT
gets about half of codebook 0 wrong: the words must come from the tokens, the voice may come from the codes.
It also reads the speaker encoder's embedding of the utterance (unless `--without-speaker`; dropped for a fifth
of the crops), so that the voice need not come from the codes at all. At inference it reads the tokens, the
target voice's embedding and the first `--decode-codebooks` codes (default 0: AcousticGPT's free-running codes
cost more words than they add voice, docs/experiments/2026-11-27-ustoken-aided-decoding.md).

The encoder, the codebooks and the vocoder stay frozen, so the codes are the codec's own (a DualSpeechLM trained
on them needs no retraining). Training: L1 to the true log-mel on random 2-second crops of the `speech` training
split, whose codes, log-mels, USTokens and speaker embeddings are computed once up front. Then the judges score
the test splits' reference codes decoded without the tokens and with them, reading no codebook, the default
number and all, and the speaker encoder scores the voice (SIM to the reference audio). The default decoding is
judged through both vocoders, and the decoder keeps the better one there (the codec chose its own on round trips of
the codes; on decoded tokens the other one may win).

`dualspeechlm-set-codec --model <DualSpeechLM folder> --codec <this decoder's folder>` then gives a model trained on
the plain codec's codes this decoder (the main job trains the two side by side).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import NamedTuple

import torch
from tqdm.auto import tqdm

from dualspeechlm.codecs import load_codec
from dualspeechlm.configuration_mel_codec import VOCODERS, MelCodecConfig
from dualspeechlm.feature_extraction_ustokenizer import USTokenizerFeatureExtractor
from dualspeechlm.modeling_codec_tokens import load_speech_tokenizer
from dualspeechlm.modeling_dualspeechlm import DualSpeechLMForConditionalGeneration
from dualspeechlm.modeling_mel_codec import MelCodecModel
from dualspeechlm.speaker_encoder import SpeakerEncoderModel

from .codec_training import add_run_arguments, corpus_waveforms, optimizer_step
from .encoder_cache import codes_fingerprint
from .judge import judge, speech_judges
from .token_cache import column_tokens


class DecoderItem(NamedTuple):
    """One utterance: codes `[n_q, F]`, log-mel `[n_mels, F]`, USTokens `[U]`, speaker embedding `[S]` (or None)."""

    codes: torch.Tensor
    log_mel: torch.Tensor
    ustokens: torch.Tensor
    speaker: torch.Tensor | None


@torch.no_grad()
def decoder_items(codec: MelCodecModel, waveforms: list[torch.Tensor], tokens: list[list[int]],
                  speakers: torch.Tensor | None = None) -> list[DecoderItem]:
    """One `DecoderItem` per utterance, F cut to the tokens' 2U frames; `speakers` `[N, S]`: the utterances' speaker
    embeddings, for a codec that reads them."""
    codec.eval()
    items = []
    for index, (waveform, ids) in enumerate(zip(tqdm(waveforms, desc="codes and log-mels", unit="utterance"), tokens)):
        log_mel, frame_lengths = codec.log_mel(waveform[None], torch.tensor([len(waveform)]))
        codes = codec.quantize(log_mel, frame_lengths)[1][0]
        frames = min(codes.shape[-1], codec.config.frames_per_ustoken * len(ids))
        speaker = None if speakers is None else speakers[index]
        items.append(DecoderItem(codes[:, :frames], log_mel[0, :, :frames], torch.tensor(ids), speaker))
    return items


class DecoderBatch(NamedTuple):
    """codes `[B, n_q, F]`, log-mels `[B, n_mels, F]`, frame lengths `[B]`, USTokens `[B, U]`, token lengths `[B]`
    (zero padded), speaker embeddings `[B, S]` (None when the items have none)."""

    codes: torch.Tensor
    log_mels: torch.Tensor
    frame_lengths: torch.Tensor
    ustokens: torch.Tensor
    ustoken_lengths: torch.Tensor
    speakers: torch.Tensor | None


def random_batch(items: list[DecoderItem], batch_size: int, tokens_per_crop: int, per_token: int,
                 generator: torch.Generator) -> DecoderBatch:
    """Random crops of whole tokens (`per_token` frames each) from random items."""
    picks = [items[i] for i in torch.randint(len(items), (batch_size,), generator=generator).tolist()]
    n_q, n_mels = picks[0].codes.shape[0], picks[0].log_mel.shape[0]
    codes = torch.zeros(batch_size, n_q, tokens_per_crop * per_token, dtype=torch.long)
    mels = torch.zeros(batch_size, n_mels, tokens_per_crop * per_token)
    ids = torch.zeros(batch_size, tokens_per_crop, dtype=torch.long)
    frame_lengths, token_lengths = torch.zeros(batch_size, dtype=torch.long), torch.zeros(batch_size, dtype=torch.long)
    for row, item in enumerate(picks):
        start = torch.randint(max(1, len(item.ustokens) - tokens_per_crop + 1), (1,), generator=generator).item()
        token_crop = item.ustokens[start : start + tokens_per_crop]
        frames = item.codes[:, start * per_token : (start + tokens_per_crop) * per_token].shape[-1]
        codes[row, :, :frames] = item.codes[:, start * per_token : start * per_token + frames]
        mels[row, :, :frames] = item.log_mel[:, start * per_token : start * per_token + frames]
        ids[row, : len(token_crop)] = token_crop
        frame_lengths[row], token_lengths[row] = frames, len(token_crop)
    speakers = None if picks[0].speaker is None else torch.stack([item.speaker for item in picks])
    return DecoderBatch(codes, mels, frame_lengths, ids, token_lengths, speakers)


def train_decoder(codec: MelCodecModel, items: list[DecoderItem], steps: int, batch_size: int, lr: float,
                  generator: torch.Generator, token_dropout: float = 0.2, tokens_per_crop: int = 50,
                  code_noise: float = 0.0, speaker_dropout: float = 0.2) -> list[float]:
    """Decoder + USToken embedding (+ speaker projection) on log-mel L1 with codebook dropout: each item reads its
    tokens and the first k codebooks, k uniform in 0..n_q, or, with probability `token_dropout`, every codebook and no
    tokens, so the plain codec path keeps working. With `code_noise`, that share of the codes of items that keep their
    tokens is replaced by random codes, as AcousticGPT gets them wrong: the decoder learns to take the words from the
    tokens. Items that keep their tokens read their speaker embedding too, but for a `speaker_dropout` share."""
    reads_speakers = codec.config.speaker_embedding_size is not None
    parts = [codec.decoder, codec.ustoken_embedding] + ([codec.speaker_projection] if reads_speakers else [])
    parameters = [p for part in parts for p in part.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    codec.eval()
    for part in parts:
        part.train()
    losses = []
    for step in (bar := tqdm(range(steps), desc="USToken-aided decoder", unit="step")):
        batch = random_batch(items, batch_size, tokens_per_crop, codec.config.frames_per_ustoken, generator)
        depth = torch.randint(codec.num_codebooks + 1, (batch_size,), generator=generator)
        dropped = torch.rand(batch_size, generator=generator) < token_dropout
        depth = torch.where(dropped, codec.num_codebooks, depth)
        noisy = (torch.rand(batch.codes.shape, generator=generator) < code_noise) & ~dropped[:, None, None]
        codes = torch.where(noisy, torch.randint(codec.codebook_size, batch.codes.shape, generator=generator),
                            batch.codes)
        speakers = None
        if reads_speakers:
            heard = ~dropped & (torch.rand(batch_size, generator=generator) >= speaker_dropout)
            speakers = batch.speakers * heard[:, None]  # zero: decoded as without a voice
        decoded = codec.decode_mel(codes, batch.frame_lengths, batch.ustokens, batch.ustoken_lengths * ~dropped,
                                   depth=depth, speaker_embeddings=speakers)
        loss = codec.mel_l1(decoded, batch.log_mels, batch.frame_lengths)
        losses.append(optimizer_step(optimizer, loss, parameters, step, steps, lr))
        bar.set_postfix(mel_l1=f"{losses[-1]:.3f}")
    codec.eval()
    return losses


def token_decoding(codec: MelCodecModel, depth: int | None = None) -> str:
    """The name of `judge_depths`' condition that decodes the tokens (and the voice) with the first `depth` codebooks
    (default: the config's `ustoken_decode_codebooks`, the decoding a DualSpeechLM's written tokens take)."""
    speaker = " + speaker" if codec.config.speaker_embedding_size is not None else ""
    depth = (codec.config.ustoken_decode_codebooks or 0) if depth is None else depth
    return f"USTokens{speaker} + {depth} codebook(s)"


@torch.no_grad()
def judge_depths(codec: MelCodecModel, items: list[DecoderItem], texts: list[str], judges: dict,
                 speaker_encoder=None, batch_size: int = 16) -> dict:
    """Judges' WER of the items' reference codes decoded without tokens (the plain codec) and with them, reading no
    codebook, the config's `ustoken_decode_codebooks` and every one (and the items' speaker embeddings, for a codec
    that reads them), through the config's vocoder, and the default decoding (`token_decoding`) through each vocoder:
    {"<decoded from>, <vocoder>": {judge: WER, and "sim" with a `speaker_encoder`: the mean cosine of the decoded
    audio's speaker embedding and the reference's}}."""
    default = codec.config.ustoken_decode_codebooks or 0
    depths = sorted({0, default, codec.num_codebooks})
    conditions = {("codes only", None): [codec.config.vocoder],
                  **{(token_decoding(codec, k), k): VOCODERS if k == default else [codec.config.vocoder]
                     for k in depths}}
    reads_speakers = codec.config.speaker_embedding_size is not None
    references = torch.stack([item.speaker for item in items]) if speaker_encoder is not None else None
    report = {}
    for (name, depth), vocoders in conditions.items():
        audio = {vocoder: [] for vocoder in vocoders}
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            codes = torch.nn.utils.rnn.pad_sequence([item.codes.T for item in chunk], batch_first=True).transpose(1, 2)
            frames = torch.tensor([item.codes.shape[-1] for item in chunk])
            if depth is None:
                mel = codec.decode_mel(codes, frames)
            else:
                ids = torch.nn.utils.rnn.pad_sequence([item.ustokens for item in chunk], batch_first=True)
                speakers = torch.stack([item.speaker for item in chunk]) if reads_speakers else None
                mel = codec.decode_mel(codes, frames, ids, torch.tensor([len(item.ustokens) for item in chunk]),
                                       depth=depth, speaker_embeddings=speakers)
            for vocoder in vocoders:
                waves = codec.vocode(mel, frames, vocoder=vocoder)
                audio[vocoder] += [w[: int(n) * codec.config.hop_length].numpy() for w, n in zip(waves, frames)]
        for vocoder, waves in audio.items():
            result = judge(texts, waves, codec.sampling_rate, judges=judges)
            scores = report[f"{name}, {vocoder}"] = {j: result["judges"][j]["wer"] for j in judges}
            if speaker_encoder is not None:
                embedded = speaker_encoder.embed(waves, sampling_rate=codec.sampling_rate)
                scores["sim"] = torch.nn.functional.cosine_similarity(embedded, references).mean().item()
    return report


def better_vocoder(codec: MelCodecModel, report: dict) -> str:
    """The vocoder with the lower mean WER (over the splits and judges of `report`: {split: `judge_depths`}) on the
    default decoding, the one a DualSpeechLM's written tokens take. The codec chose its own on round trips of the
    codes, which need not carry over to written tokens."""
    decoding = token_decoding(codec)
    mean_wer = {vocoder: statistics.fmean(wer for conditions in report.values()
                                          for name, wer in conditions[f"{decoding}, {vocoder}"].items()
                                          if name != "sim")
                for vocoder in sorted(VOCODERS, key=lambda vocoder: vocoder != codec.config.vocoder)}
    return min(mean_wer, key=mean_wer.get)  # the codec's first: a tie keeps it


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="dualspeechlm-train-codec-decoder", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--codec", default="models/mel-codec", type=Path, help="the trained codec folder")
    parser.add_argument("--ustokenizer", default="models/ustokenizer", type=Path)
    parser.add_argument("--corpus", default="data/corpus", type=Path)
    parser.add_argument("--cache-dir", default="data/encoder_cache", type=Path)
    parser.add_argument("--speaker-encoder", default="models/speaker-encoder", type=Path,
                        help="its embeddings give the decoder the voice; also scores SIM of the decoded audio")
    parser.add_argument("--without-speaker", action="store_true",
                        help="the decoder does not read speaker embeddings (the voice comes from the codes alone)")
    parser.add_argument("--whisper", default="models/whisper-tiny.en", type=Path, help="the judge's Whisper folder")
    parser.add_argument("--output-dir", default="models/mel-codec-ustokens", type=Path)
    parser.add_argument("--steps", type=int, default=8000)
    parser.add_argument("--code-noise", type=float, default=0.5,
                        help="share of codes replaced by random ones where the tokens are read (see train_decoder)")
    parser.add_argument("--decode-codebooks", type=int, default=0,
                        help="codebooks the decoder reads beside the USTokens at inference (the saved default; 0: "
                             "the words from the tokens, the voice from the speaker embedding)")
    add_run_arguments(parser, lr=1e-3, eval_limit=50)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    ustokenizer = load_speech_tokenizer(args.ustokenizer)
    extractor = USTokenizerFeatureExtractor.from_pretrained(args.ustokenizer)
    config = MelCodecConfig.from_pretrained(args.codec)
    config.ustoken_vocab_size = ustokenizer.config.codebook_size
    config.ustoken_decode_codebooks = args.decode_codebooks
    config.frames_per_ustoken = round(config.frame_rate / ustokenizer.config.tokens_per_second)
    speaker_encoder = SpeakerEncoderModel.from_pretrained(args.speaker_encoder).eval()
    if not args.without_speaker:
        config.speaker_embedding_size = speaker_encoder.config.embedding_size
    codec = MelCodecModel.from_pretrained(args.codec, config=config)

    def split_items(split: str, limit: int | None):
        waveforms, texts, _ = corpus_waveforms(args.corpus, split, limit)
        tokens = column_tokens(ustokenizer, extractor, args.corpus, "speech", split, "audio", args.cache_dir,
                               [waveforms], limit)
        speakers = speaker_encoder.embed(waveforms, sampling_rate=codec.sampling_rate)
        return decoder_items(codec, waveforms, tokens, speakers), texts

    started = time.perf_counter()
    items, _ = split_items("train", args.train_limit)
    losses = train_decoder(codec, items, args.steps, args.batch_size, args.lr, generator, code_noise=args.code_noise)
    training_seconds = time.perf_counter() - started
    codec.save_pretrained(args.output_dir)

    judges = speech_judges(args.whisper, args.corpus)
    report = {split: judge_depths(codec, *split_items(split, args.eval_limit), judges, speaker_encoder)
              for split in ("test", "test_unseen_voice")}
    codec.config.vocoder = better_vocoder(codec, report)
    codec.config.save_pretrained(args.output_dir)  # only the vocoder changed since the weights were saved
    lines = ["| split | decoded from | " + " | ".join(f"{j} WER" for j in judges) + " | SIM |",
             "|---|---|" + "---|" * (len(judges) + 1)]
    lines += [f"| {split} | {name} | " + " | ".join(f"{100 * scores[j]:.1f}%" for j in judges)
              + f" | {scores['sim']:.2f} |"
              for split, conditions in report.items() for name, scores in conditions.items()]
    table = "\n".join(lines)
    (args.output_dir / "decoder_report.json").write_text(json.dumps(
        {"training_seconds": training_seconds, "loss": losses, "evaluation": report, "vocoder": codec.config.vocoder},
        indent=1) + "\n")
    (args.output_dir / "decoder_report.md").write_text(
        f"# USToken-aided decoder\n\ntrained {training_seconds / 60:.1f} min (from {args.codec}); reference codes of "
        f"the first {args.eval_limit} utterances per split; default: {token_decoding(codec)} through the "
        f"{codec.config.vocoder} vocoder (the lower mean WER there); SIM: "
        f"speaker encoder cosine to the reference audio\n\n"
        f"{table}\n")
    print(table)


def set_codec(model_folder: str | Path, codec_folder: str | Path) -> None:
    """Give the DualSpeechLM in `model_folder` the codec in `codec_folder` (the model is saved again, its codec
    replaced). The new codec must encode as the model's does (the same encoding modules: e.g. the same codec with a
    decoder trained here), for the model writes the codes it was trained on."""
    model = DualSpeechLMForConditionalGeneration.from_pretrained(model_folder)
    if model.codec_model is None:
        raise ValueError(f"{model_folder} holds no codec: nothing tells which codes its model writes")
    codec = load_codec(str(codec_folder))
    if codes_fingerprint(codec) != codes_fingerprint(model.codec_model):
        raise ValueError(f"{codec_folder} encodes differently from {model_folder}'s codec: the model's codes would "
                         "not be its codes (give a codec whose encoder and codebooks are those the model trained on)")
    model.set_codec(codec)
    model.save_pretrained(model_folder)


def set_codec_main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=set_codec.__doc__)
    parser.add_argument("--model", required=True, type=Path, help="a DualSpeechLM model folder")
    parser.add_argument("--codec", required=True, type=Path, help="the codec folder to give it")
    args = parser.parse_args(argv)
    set_codec(args.model, args.codec)
    print(f"{args.model}: speaks through {args.codec}")


if __name__ == "__main__":
    main()
