"""How well does a trained AcousticGPT predict each codebook, and what do its codes lose against the codec's own?

    python -m bench.probes.probe_acoustic --model <a model trained with acoustic_loss_weight > 0> --limit 32

Needs a DualSpeechLM whose AcousticGPT was trained (`acoustic_loss_weight` > 0, e.g. the dual-token path on a
single-codebook codec); a model of the tiny preset (weight 0) is refused. On the first `--limit` TTS items of a split
(the speech config's cached USTokens and codec codes), with CoC "both" as at inference, it reports:
- per codebook, AcousticGPT's teacher-forced cross-entropy (nats per code) and top-1 accuracy on the
  reference codes: how predictable each codebook is from the USTokens, the speaker and the earlier codes;
- the Whisper judge's WER and the seconds of audio for codes built five ways, all decoded by the model's
  codec: the reference codes (the codec's own ceiling); reference codebook 0 with uniformly random codes
  in the finer codebooks (how much they matter); reference codebook 0 with AcousticGPT's teacher-forced
  guesses for the finer ones; every codebook teacher-forced; and resynthesis (`model.render_speech` from
  the reference USTokens) with the model's sampling settings and greedy.
A codec that reads USTokens (`dualspeechlm-train-codec-decoder`; `--codec` swaps one in) gets the reference
USTokens with every set of codes and reads its first `--decode-codebooks` codebooks (default: its config's).
"""

import argparse

import torch
from torch.nn import functional as F
from torch.nn.utils.rnn import pad_sequence
from transformers import AutoTokenizer

from dualspeechlm.codecs import load_codec
from dualspeechlm.modeling_acoustic_gpt import delay_pattern, undo_delay
from dualspeechlm.modeling_dualspeechlm import DualSpeechLMForConditionalGeneration, audio_arrays
from dualspeechlm.processing_dualspeechlm import DualSpeechLMProcessor
from dualspeechlm.training.evaluate_dualspeechlm import as_judged, speak
from dualspeechlm.training.judge import WhisperJudge
from dualspeechlm.training.metrics import word_error_rate
from dualspeechlm.training.multitask import DualSpeechLMCollator, task_example
from dualspeechlm.training.token_cache import cached_tokens


def teacher_forced(model, batch) -> tuple[torch.Tensor, ...]:
    """AcousticGPT on the reference codes -> (its argmax codes `[batch, n_q, frames]`, and per codebook `[n_q]`: summed
    CE, correct top-1 guesses, codes scored)."""
    config = model.config.acoustic_config
    with torch.no_grad():
        logits = model(**batch, coc_modes=["both"] * len(batch["tasks"])).acoustic_logits  # [batch, steps, n_q, vocab]
    _, targets, mask = delay_pattern(batch["acoustic_codes"], batch["acoustic_lengths"], config)
    logits = logits.transpose(1, 2)  # [batch, n_q, steps, vocab], as targets and mask
    ce = torch.stack([F.cross_entropy(logits[:, q][mask[:, q]].float(), targets[:, q][mask[:, q]], reduction="sum")
                      for q in range(config.num_codebooks)])
    correct = ((logits.argmax(-1) == targets) & mask).sum((0, 2))
    guesses = undo_delay(logits[..., : config.codebook_size].argmax(-1), batch["acoustic_lengths"])
    return guesses, ce, correct, mask.sum((0, 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a DualSpeechLM folder with a trained AcousticGPT")
    parser.add_argument("--corpus", default="data/corpus")
    parser.add_argument("--cache-dir", default="data/encoder_cache")
    parser.add_argument("--whisper", default="models/whisper-tiny.en")
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--codec", default=None, help="a codec folder to use instead of the model's")
    parser.add_argument("--decode-codebooks", type=int, default=None,
                        help="codebooks a USToken-reading codec decodes (default: its config's)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = DualSpeechLMForConditionalGeneration.from_pretrained(args.model).eval()
    if model.config.acoustic_loss_weight == 0:
        raise SystemExit(f"{args.model} was trained with acoustic_loss_weight 0: its AcousticGPT never learnt, so "
                         f"there is nothing to probe. Train one with --acoustic-loss-weight > 0 "
                         f"(the tiny preset sets 0).")
    if args.codec:
        model.set_codec(load_codec(args.codec))
    processor = DualSpeechLMProcessor.from_pretrained(args.model)
    codec, n_q = model.codec_model, model.config.num_codebooks
    if args.decode_codebooks is not None:
        codec.config.ustoken_decode_codebooks = args.decode_codebooks
    rows = cached_tokens(args.corpus, "speech", args.split, processor.ustokenizer, processor.feature_extractor, codec,
                         processor.speaker_encoder, args.cache_dir).with_format("numpy")
    examples = [task_example("tts", rows[i]) for i in range(min(args.limit, len(rows)))]
    collate = DualSpeechLMCollator(AutoTokenizer.from_pretrained(args.model), model.config)

    ways = ["reference codes", "reference codebook 0, random finer codes", "reference codebook 0, guessed finer codes",
            "every codebook guessed (teacher-forced)", "resynthesis, model's sampling", "resynthesis, greedy"]
    if n_q == 1:
        ways = [way for way in ways if "finer" not in way]
    waveforms = {way: [] for way in ways}
    ce, correct, counts = torch.zeros(n_q), torch.zeros(n_q), torch.zeros(n_q)
    generator = torch.Generator().manual_seed(0)
    for start in range(0, len(examples), args.batch_size):
        chunk = examples[start : start + args.batch_size]
        batch = collate(chunk)
        written = [torch.as_tensor(example["answer_speech_ids"]) for example in chunk]  # the reference USTokens
        ustokens = pad_sequence(written, batch_first=True)
        ustoken_lengths = torch.tensor([len(ids) for ids in written])
        codes, lengths = batch["acoustic_codes"], batch["acoustic_lengths"]
        guesses, chunk_ce, chunk_correct, chunk_counts = teacher_forced(model, batch)
        ce, correct, counts = ce + chunk_ce, correct + chunk_correct, counts + chunk_counts
        random_fine, guessed_fine = codes.clone(), codes.clone()
        random_fine[:, 1:] = torch.randint(0, codec.codebook_size, random_fine[:, 1:].shape, generator=generator)
        guessed_fine[:, 1:] = guesses[:, 1:]
        built = {ways[0]: codes, "reference codebook 0, random finer codes": random_fine,
                 "reference codebook 0, guessed finer codes": guessed_fine,
                 "every codebook guessed (teacher-forced)": guesses}
        for way, way_codes in built.items():
            if way in waveforms:
                waveforms[way] += audio_arrays(*model.decode_codes(way_codes, lengths, ustokens, ustoken_lengths))
        for way, settings in (("resynthesis, model's sampling", {}), ("resynthesis, greedy", {"do_sample": False})):
            spoken, _ = speak(model, processor, chunk, batch_size=len(chunk), from_reference=True, **settings)
            waveforms[way] += as_judged(spoken)

    reads = "" if codec.ustoken_vocab_size is None else (
        f", the codec reading the USTokens + {codec.config.ustoken_decode_codebooks} codebook(s)")
    print(f"{args.model}, {len(examples)} `{args.split}` TTS items{reads}\n")
    print("| codebook | teacher-forced CE (nats) | top-1 accuracy |\n|---|---|---|")
    for q in range(n_q):
        print(f"| {q} | {float(ce[q] / counts[q]):.2f} | {100 * float(correct[q] / counts[q]):.1f}% |")
    judge = WhisperJudge(args.whisper, progress=False)
    references = [ex["text"] for ex in examples]
    print("\n| codes | Whisper WER | seconds |\n|---|---|---|")
    for way, waves in waveforms.items():
        wer = word_error_rate(references, judge.transcribe(waves, codec.sampling_rate))
        print(f"| {way} | {100 * wer:.1f}% | {sum(len(w) for w in waves) / codec.sampling_rate:.0f} |", flush=True)


if __name__ == "__main__":
    main()
