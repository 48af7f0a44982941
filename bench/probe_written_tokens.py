"""How far are the USTokens a DualSpeechLM writes for TTS from the reference audio's own, and are its substitutions
near neighbours in the USTokenizer's codebook?

    python bench/probe_written_tokens.py --model models/dualspeechlm [--split test] [--limit 60]

Writes the TTS test items' USTokens as the evaluation does (`speech_outputs`: the model's `speech_generation`,
seeded), aligns them with the reference tokens (jiwer, one "word" per token) and prints the shares of reference tokens
hit, substituted and deleted, the insertions, the length ratio and, for each substitution, the written token's rank
among the reference token's nearest codebook entries (L2; 1: the nearest other token), against a uniform draw's.
"""

from __future__ import annotations

import argparse

import jiwer
import torch

from dualspeechlm.modeling_dualspeechlm import DualSpeechLMForConditionalGeneration
from dualspeechlm.processing_dualspeechlm import DualSpeechLMProcessor
from dualspeechlm.training.evaluate_dualspeechlm import speech_outputs
from dualspeechlm.training.multitask import CONFIG_OF_TASK, task_example
from dualspeechlm.training.token_cache import cached_tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="models/dualspeechlm")
    parser.add_argument("--corpus", default="data/corpus")
    parser.add_argument("--cache-dir", default="data/encoder_cache")
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=60)
    args = parser.parse_args()

    model = DualSpeechLMForConditionalGeneration.from_pretrained(args.model).eval()
    processor = DualSpeechLMProcessor.from_pretrained(args.model)
    parts = (processor.ustokenizer, processor.feature_extractor, None, processor.speaker_encoder)
    rows = cached_tokens(args.corpus, CONFIG_OF_TASK["tts"], args.split, *parts, args.cache_dir).with_format("numpy")
    examples = [task_example("tts", rows[i]) for i in range(min(args.limit, len(rows)))]
    written = [ids[:n].tolist() for out in speech_outputs(model, processor, examples)
               for ids, n in zip(out.ustokens, out.ustoken_lengths)]
    references = [[int(i) for i in ex["answer_speech_ids"]] for ex in examples]

    alignment = jiwer.process_words([" ".join(map(str, ids)) for ids in references],
                                    [" ".join(map(str, ids)) for ids in written])
    total = sum(map(len, references))
    print(f"{args.split}: {len(examples)} items, {total} reference tokens; hit {alignment.hits / total:.3f}, "
          f"substituted {alignment.substitutions / total:.3f}, deleted {alignment.deletions / total:.3f}, "
          f"inserted {alignment.insertions / total:.3f}; written / reference length "
          f"{sum(map(len, written)) / total:.3f}")

    codebook = processor.ustokenizer.quantizer.codebook.detach().float()
    rank = torch.cdist(codebook, codebook).argsort(-1).argsort(-1)  # rank[a, b]: b's place among a's neighbours
    pairs = [(ref[chunk.ref_start_idx + k], hyp[chunk.hyp_start_idx + k])
             for ref, hyp, chunks in zip(references, written, alignment.alignments)
             for chunk in chunks if chunk.type == "substitute" for k in range(chunk.ref_end_idx - chunk.ref_start_idx)]
    ranks = rank[torch.tensor(pairs).T.unbind()].float()
    others = codebook.shape[0] - 1
    print(f"substitutions: {len(pairs)}, median neighbour rank {ranks.median().item():.0f} of {others}; within "
          + ", ".join(f"{k}: {(ranks <= k).float().mean().item():.3f} (uniform {k / others:.3f})" for k in (5, 10, 50, 100)))


if __name__ == "__main__":
    main()
