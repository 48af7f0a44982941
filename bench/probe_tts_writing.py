"""Does the LLM write better USTokens for TTS with more training, or more data? A TTS continuation of a model's
LLM, judged through a codec that renders the tokens alone.

    python bench/probe_tts_writing.py prepare --model models/dualspeechlm --output tts_inputs.pt
    python bench/probe_tts_writing.py train --inputs tts_inputs.pt --steps 8000 --checkpoints 0,1000,4000 \\
        --batch-size 32 [--asr-share 0.5] --device cuda --output tts_written.pt   # torch + transformers alone
    python bench/probe_tts_writing.py render --model models/dualspeechlm --written tts_written.pt

`prepare` writes the stage-3 TTS and ASR sequences of the `speech` training split (of `--train-corpus`, e.g. a
larger one, without the test sentences; loss on the answer, as stage 3 computes it), the prompts of the first
`--limit` (TTS) and `--asr-limit` (ASR) utterances of each test split with their reference USTokens, texts and
speaker embeddings, and the model's LLM (config + weights). `train` continues that LLM on TTS alone (AdamW, linear
warm-up, constant rate), or with `--asr-share p` on single-task batches, ASR with probability p, and at each
checkpoint step writes USTokens for the TTS prompts (the model's `speech_generation` sampling, seeded), measures
the teacher-forced cross-entropy of the reference USTokens and transcribes the ASR prompts (greedy). `render`
decodes the written tokens, and the reference ones, with the model folder's codec reading the tokens alone
(`--decode-codebooks 0`, and the speaker embedding when the codec reads one), scores them with Whisper tiny.en
and scores the transcripts: the gap between the reference row and a checkpoint is what the LLM's writing loses.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch.nn.utils.rnn import pad_sequence


def prepare(args) -> None:
    import numpy as np

    from dualspeechlm.modeling_dualspeechlm import DualSpeechLMForConditionalGeneration
    from dualspeechlm.processing_dualspeechlm import DualSpeechLMProcessor
    from dualspeechlm.training.multitask import task_example
    from dualspeechlm.training.token_cache import cached_tokens

    model = DualSpeechLMForConditionalGeneration.from_pretrained(args.model).eval()
    processor = DualSpeechLMProcessor.from_pretrained(args.model)
    parts = (processor.ustokenizer, processor.feature_extractor, processor.codec, processor.speaker_encoder)

    def examples(corpus: str, cache_dir: str, split: str, limit: int | None = None) -> list[dict]:
        rows = cached_tokens(corpus, "speech", split, *parts, cache_dir).with_format("numpy")
        return [task_example("tts", rows[i]) for i in range(min(limit or len(rows), len(rows)))]

    def as_asr(example: dict) -> dict:  # the TTS target is the utterance's audio: its USTokens -> its text
        return {"task": "asr", "speech_ids": example["answer_speech_ids"], "answer": example["text"]}

    tests = {split: examples(args.corpus, args.cache_dir, split, args.limit) for split in ("test", "test_unseen_voice")}
    asr_tests = {split: [as_asr(ex) for ex in examples(args.corpus, args.cache_dir, split, args.asr_limit)]
                 for split in tests}
    held_out = {str(ex["answer"]) for chosen in asr_tests.values() for ex in chosen}
    held_out |= {str(ex["text"]) for chosen in tests.values() for ex in chosen}
    train, asr_train = [], []
    for example in examples(args.train_corpus or args.corpus, args.train_cache_dir or args.cache_dir, "train"):
        if str(example["text"]) not in held_out:  # another corpus' training split may hold the test sentences
            for task, sequences in ((example, train), (as_asr(example), asr_train)):
                batch = processor.build_inputs([task], with_answers=True)  # int16: the file must travel (64 MiB)
                sequences.append((batch["input_ids"][0].to(torch.int16), batch["labels"][0].to(torch.int16)))
    for split, chosen in tests.items():
        prompts = [processor.build_inputs([ex], with_answers=False)["input_ids"][0] for ex in chosen]
        tests[split] = {"prompts": prompts, "reference": [torch.tensor(ex["answer_speech_ids"]) for ex in chosen],
                        "texts": [str(ex["text"]) for ex in chosen],
                        "speakers": torch.from_numpy(np.stack([ex["speaker"] for ex in chosen])),
                        "asr_prompts": [processor.build_inputs([ex], with_answers=False)["input_ids"][0]
                                        for ex in asr_tests[split]],
                        "asr_texts": [str(ex["answer"]) for ex in asr_tests[split]]}
    config = model.config
    torch.save({"train": train, "asr_train": asr_train, "tests": tests, "llm_config": config.text_config.to_dict(),
                "llm_state": model.language_model.state_dict(), "speech_generation": dict(config.speech_generation),
                "speech_token_offset": config.speech_token_offset, "num_speech_tokens": config.num_speech_tokens,
                "audio_start_token_id": config.audio_start_token_id, "audio_end_token_id": config.audio_end_token_id,
                "pad_token_id": config.text_config.pad_token_id}, args.output)
    print(f"{len(train)} training sequences, {sum(len(t['prompts']) for t in tests.values())} test prompts -> {args.output}")


def speech_only_logits(saved: dict):
    """A logits processor: only USTokens and `</audio>` may be written (as the model's SpeechTokensOnly)."""
    offset, count, end = saved["speech_token_offset"], saved["num_speech_tokens"], saved["audio_end_token_id"]

    def process(input_ids, scores):
        allowed = torch.zeros(scores.shape[-1], dtype=torch.bool, device=scores.device)
        allowed[offset : offset + count] = True
        allowed[end] = True
        return scores.masked_fill(~allowed, float("-inf"))

    return process


def left_padded(prompts: list[torch.Tensor], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts -> ids and attention mask `[batch, longest]`, left-padded for generation."""
    longest = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), longest), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, prompt in enumerate(prompts):
        ids[row, longest - len(prompt):], mask[row, longest - len(prompt):] = prompt, 1
    return ids, mask


@torch.no_grad()
def write_tokens(llm, saved: dict, prompts: list[torch.Tensor], device: str, seed: int, batch_size: int = 64):
    """USToken ids (0..K-1) the LLM writes after each prompt + `<audio>`, sampled as the model samples."""
    from transformers import GenerationConfig, LogitsProcessorList

    offset, end, pad = saved["speech_token_offset"], saved["audio_end_token_id"], saved["pad_token_id"]
    settings = {**saved["speech_generation"], "eos_token_id": end, "pad_token_id": pad}
    torch.manual_seed(seed)
    written = []
    for start in range(0, len(prompts), batch_size):
        ids, mask = left_padded([torch.cat([p, torch.tensor([saved["audio_start_token_id"]])])
                                 for p in prompts[start : start + batch_size]], pad)
        room = llm.config.max_position_embeddings - ids.shape[1]
        config = GenerationConfig(**{**settings, "max_new_tokens": min(settings.get("max_new_tokens", 400), room)})
        out = llm.generate(ids.to(device), attention_mask=mask.to(device), generation_config=config,
                           logits_processor=LogitsProcessorList([speech_only_logits(saved)]))[:, ids.shape[1]:].cpu()
        for row in out:
            stop = (row == end).nonzero()
            row = row[: int(stop[0]) if len(stop) else len(row)]
            written.append((row - offset).tolist())
    return written


@torch.no_grad()
def transcribe(llm, saved: dict, prompts: list[torch.Tensor], device: str, batch_size: int = 64) -> list[list[int]]:
    """Greedy text token ids after each ASR prompt (up to EOS, at most 48), as the evaluation transcribes."""
    eos, pad = saved["llm_config"]["eos_token_id"], saved["pad_token_id"]
    answers = []
    for start in range(0, len(prompts), batch_size):
        ids, mask = left_padded(prompts[start : start + batch_size], pad)
        out = llm.generate(ids.to(device), attention_mask=mask.to(device), do_sample=False, max_new_tokens=48,
                           eos_token_id=eos, pad_token_id=pad)[:, ids.shape[1]:].cpu()
        answers += [row[: int((row == eos).nonzero()[0]) if (row == eos).any() else len(row)].tolist() for row in out]
    return answers


def batch_of(sequences: list[tuple[torch.Tensor, torch.Tensor]], pad: int, device: str) -> dict:
    """(ids, labels) pairs -> the LLM's right-padded keyword inputs."""
    ids = pad_sequence([s.long() for s, _ in sequences], batch_first=True, padding_value=pad)
    labels = pad_sequence([l.long() for _, l in sequences], batch_first=True, padding_value=-100)
    mask = pad_sequence([torch.ones_like(s) for s, _ in sequences], batch_first=True)
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


@torch.no_grad()
def reference_loss(llm, saved: dict, split: dict, device: str) -> float:
    """Mean cross-entropy (nats per USToken, and `</audio>`) of the reference answers after each prompt."""
    sequences = []
    for prompt, reference in zip(split["prompts"], split["reference"]):
        answer = torch.cat([torch.tensor([saved["audio_start_token_id"]]), reference + saved["speech_token_offset"],
                            torch.tensor([saved["audio_end_token_id"]])])
        labels = torch.cat([torch.full_like(prompt, -100), torch.tensor([-100]), answer[1:]])
        sequences.append((torch.cat([prompt, answer]), labels))
    losses = [llm(**batch_of(sequences[i : i + 32], saved["pad_token_id"], device)).loss.item()
              for i in range(0, len(sequences), 32)]
    return sum(losses) / len(losses)


def train(args) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    saved = torch.load(args.inputs)
    config = LlamaConfig(**{k: v for k, v in saved["llm_config"].items() if k not in ("architectures", "model_type")})
    llm = LlamaForCausalLM(config)
    llm.load_state_dict(saved["llm_state"])
    llm.to(args.device)
    optimizer = torch.optim.AdamW(llm.parameters(), lr=args.learning_rate, weight_decay=0.05)
    generator = torch.Generator().manual_seed(args.seed)
    checkpoints = sorted({int(c) for c in args.checkpoints.split(",")} | {args.steps})
    results, started = {"checkpoints": {}, "settings": {k: v for k, v in vars(args).items() if k != "func"}}, time.perf_counter()
    for step in range(args.steps + 1):
        if step in checkpoints:
            llm.eval()
            entry = {"seconds": time.perf_counter() - started}
            for name, split in saved["tests"].items():
                entry[name] = {"loss": reference_loss(llm, saved, split, args.device),
                               "written": write_tokens(llm, saved, split["prompts"], args.device, args.seed),
                               "transcribed": transcribe(llm, saved, split["asr_prompts"], args.device)}
            results["checkpoints"][step] = entry
            torch.save(results, args.output)  # a run cut short keeps its checkpoints
            print(f"step {step}: " + ", ".join(f"{n} loss {entry[n]['loss']:.3f}, mean length "
                                               f"{sum(map(len, entry[n]['written'])) / len(entry[n]['written']):.1f}"
                                               for n in saved["tests"]), flush=True)
            llm.train()
        if step == args.steps:
            break
        task = "asr_train" if torch.rand(1, generator=generator).item() < args.asr_share else "train"
        picks = torch.randint(len(saved[task]), (args.batch_size,), generator=generator).tolist()
        loss = llm(**batch_of([saved[task][i] for i in picks], saved["pad_token_id"], args.device)).loss
        for group in optimizer.param_groups:
            group["lr"] = args.learning_rate * min(1.0, (step + 1) / args.warmup_steps)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(llm.parameters(), 1.0)
        optimizer.step()
        if step % 500 == 0:
            print(f"step {step}: training loss {loss.item():.3f}", flush=True)


def render(args) -> None:
    import numpy as np

    from dualspeechlm.processing_dualspeechlm import DualSpeechLMProcessor
    from dualspeechlm.training.judge import WhisperJudge, judge
    from dualspeechlm.training.metrics import word_error_rate

    processor = DualSpeechLMProcessor.from_pretrained(args.model)
    codec, saved, written = processor.codec, torch.load(args.inputs), torch.load(args.written)
    if codec.ustoken_vocab_size is None:
        raise SystemExit(f"{args.model}/codec does not read USTokens: nothing renders the tokens alone")
    codec.config.ustoken_decode_codebooks = args.decode_codebooks
    whisper = {"whisper": WhisperJudge(args.whisper)}

    def wer(split: str, tokens: list[list[int]]) -> float:
        audio = []
        for start in range(0, len(tokens), 16):
            chunk = [torch.tensor(t or [0]) for t in tokens[start : start + 16]]
            ids = pad_sequence(chunk, batch_first=True)
            lengths = torch.tensor([len(t) for t in chunk])
            codes = torch.zeros(len(chunk), codec.num_codebooks, ids.shape[1] * codec.config.frames_per_ustoken,
                                dtype=torch.long)  # read at depth 0: the tokens carry everything
            speakers = saved["tests"][split]["speakers"][start : start + 16] if codec.speaker_embedding_size else None
            out = codec.decode(codes, lengths * codec.config.frames_per_ustoken, ids, lengths, speakers)
            audio += [w[:n].numpy() for w, n in zip(out.waveforms, out.lengths)]
        texts = saved["tests"][split]["texts"]
        return judge(texts, [a if len(a) else np.zeros(8000, np.float32) for a in audio], codec.sampling_rate,
                     judges=whisper)["judges"]["whisper"]["wer"]

    splits = list(saved["tests"])

    def asr_wer(entry: dict) -> str:
        if "transcribed" not in entry[splits[0]]:  # written before the probe transcribed
            return ""
        scores = []
        for split in splits:
            hypotheses = processor.tokenizer.batch_decode(entry[split]["transcribed"], skip_special_tokens=True)
            scores.append(word_error_rate(saved["tests"][split]["asr_texts"], [h.strip() for h in hypotheses]))
        return " / ".join(f"{100 * w:.1f}%" for w in scores)

    rows = [("reference USTokens", "", [wer(s, [t.tolist() for t in saved["tests"][s]["reference"]]) for s in splits], "")]
    for step, entry in sorted(written["checkpoints"].items()):
        rows.append((f"step {step}", " / ".join(f"{entry[s]['loss']:.2f}" for s in splits),
                     [wer(s, entry[s]["written"]) for s in splits], asr_wer(entry)))
    names = " / ".join(splits)
    print(f"| USTokens | teacher-forced CE ({names}) | Whisper WER ({names}) | ASR WER ({names}) |\n|---|---|---|---|")
    for name, loss, wers, asr in rows:
        print(f"| {name} | {loss} | " + " / ".join(f"{100 * w:.1f}%" for w in wers) + f" | {asr} |")
    print(json.dumps(written["settings"]))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(required=True)
    p = commands.add_parser("prepare")
    p.add_argument("--model", default="models/dualspeechlm")
    p.add_argument("--corpus", default="data/corpus")
    p.add_argument("--cache-dir", default="data/encoder_cache")
    p.add_argument("--limit", type=int, default=60, help="test sentences per split (the evaluation's TTS count)")
    p.add_argument("--asr-limit", type=int, default=100, help="test utterances per split to transcribe (the ASR count)")
    p.add_argument("--train-corpus", help="train on this corpus' `speech` training split instead (e.g. a larger one)")
    p.add_argument("--train-cache-dir", help="its encoder cache (default --cache-dir)")
    p.add_argument("--output", default="tts_inputs.pt")
    p.set_defaults(func=prepare)
    p = commands.add_parser("train")
    p.add_argument("--inputs", default="tts_inputs.pt")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--checkpoints", default="0", help="comma-separated steps at which to write and score tokens")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--learning-rate", type=float, default=5e-4)
    p.add_argument("--warmup-steps", type=int, default=50)
    p.add_argument("--asr-share", type=float, default=0.0, help="share of ASR batches (single-task, as stage 3's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--output", default="tts_written.pt")
    p.set_defaults(func=train)
    p = commands.add_parser("render")
    p.add_argument("--model", default="models/dualspeechlm")
    p.add_argument("--inputs", default="tts_inputs.pt")
    p.add_argument("--written", default="tts_written.pt")
    p.add_argument("--decode-codebooks", type=int, default=0)
    p.add_argument("--whisper", default="models/whisper-tiny.en")
    p.set_defaults(func=render)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
