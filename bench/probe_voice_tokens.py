"""How much the USTokens of the same words depend on the voice: the edit distance between the tokens of the two
voices of each `vc` pair of the token cache (same text, another voice), per token of the longer, beside that of two
different texts; with repeats collapsed too.

    python bench/probe_voice_tokens.py data/encoder_cache/tokens/vc-train-without-codes [pairs]   # seconds
"""
import itertools
import sys

import datasets
import numpy as np


def edit_distance(a: list, b: list) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (x != y))
    return row[-1]


def distance(a: list, b: list) -> float:
    return edit_distance(a, b) / max(len(a), len(b))


collapse = lambda tokens: [token for token, _ in itertools.groupby(tokens)]
pairs = datasets.load_from_disk(sys.argv[1]).select_columns(["audio_ustokens", "target_audio_ustokens"])
pairs = list(pairs.select(range(min(int(sys.argv[2]) if len(sys.argv) > 2 else 200, len(pairs)))))
source, target = [p["audio_ustokens"] for p in pairs], [p["target_audio_ustokens"] for p in pairs]
other_text = target[1:] + target[:1]
print(f"{len(pairs)} pairs, {np.mean([len(t) for t in source]):.1f} tokens each "
      f"({np.mean([len(collapse(t)) for t in source]):.1f} with repeats collapsed)")
print("| pair | edit distance per token | repeats collapsed |\n|---|---|---|")
for name, others in (("same text, other voice", target), ("other text", other_text)):
    plain = np.mean([distance(a, b) for a, b in zip(source, others)])
    collapsed = np.mean([distance(collapse(a), collapse(b)) for a, b in zip(source, others)])
    print(f"| {name} | {plain:.3f} | {collapsed:.3f} |")
