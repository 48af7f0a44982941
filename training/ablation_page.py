"""The ablation page: each row's scores beside the paper's, which of the paper's claims held, and a picture.

Pure functions of the rows' results (`training/ablations.py` runs them): `row_metrics` reads a row's
evaluation.json, `ablation_page` writes the Markdown, `plot_ablations` the PNG. Fractions are stored (WER 0.042),
percentages shown (4.2%).
"""

from __future__ import annotations

import math
from pathlib import Path

# (key, column title, which way is better, format): the scores a row is judged by; the TTS ones read the seen voices
METRICS = (
    ("asr_wer", "ASR WER (seen voices)", "lower", "percent"),
    ("asr_wer_unseen", "ASR WER (unseen voice)", "lower", "percent"),
    ("s2tt_bleu", "S2TT BLEU", "higher", "number"),
    ("ser_accuracy", "SER accuracy", "higher", "percent"),
    ("tts_whisper_wer", "TTS WER (Whisper)", "lower", "percent"),
    ("tts_pocketsphinx_wer", "TTS WER (pocketsphinx)", "lower", "percent"),
    ("tts_sim", "TTS SIM", "higher", "similarity"),
)
BETTER = {key: better for key, _, better, _ in METRICS}
TITLES = {key: title for key, title, _, _ in METRICS}
FORMATS = {key: style for key, _, _, style in METRICS}
FULL_ROW = "dualspeechlm"


def row_metrics(evaluation: dict) -> dict:
    """The `METRICS` of one evaluation.json (`evaluate_model`'s results), plus the judges' WER on the reference audio
    of the TTS sentences and, when the evaluation rendered the written USTokens through a USToken-reading decoder
    too, Whisper's WER on that (`tts_semantic_whisper_wer`)."""
    seen, unseen = evaluation["splits"]["test"], evaluation["splits"]["test_unseen_voice"]
    tts = seen["tts"]
    metrics = {
        "asr_wer": seen["asr"]["wer"], "asr_wer_unseen": unseen["asr"]["wer"], "s2tt_bleu": seen["s2tt"]["bleu"],
        "ser_accuracy": seen["ser"]["accuracy"], "tts_whisper_wer": tts["whisper_wer_generated"],
        "tts_pocketsphinx_wer": tts["pocketsphinx_wer_generated"], "tts_sim": tts["sim"],
        "tts_whisper_wer_reference": tts["whisper_wer_reference"],
        "tts_pocketsphinx_wer_reference": tts["pocketsphinx_wer_reference"],
    }
    if "tts_semantic" in seen:
        metrics["tts_semantic_whisper_wer"] = seen["tts_semantic"]["whisper_wer_generated"]
    return metrics


def shown(key: str, value: float | None) -> str:
    if value is None or math.isnan(value):  # NaN: SIM where no generated clip was long enough to embed
        return "-"
    style = FORMATS.get(key, "percent" if key.endswith("wer") else "number")
    if style == "percent":
        return f"{100 * value:.1f}%"
    return f"{value:.2f}" if style == "similarity" else f"{value:.1f}"


def worse(key: str, value: float, reference: float) -> bool:
    """Whether `value` is worse than `reference` on metric `key`."""
    return value > reference if BETTER[key] == "lower" else value < reference


def every_result(name: str, rows: dict, other_machines: dict) -> list[dict]:
    """Row `name`'s results, its latest first. `other_machines`: {row: [results]} of rows measured again elsewhere
    (ablations.json's "other_machines")."""
    return ([rows[name]] if name in rows else []) + other_machines.get(name, [])


def on_machine(name: str, machine: str | None, rows: dict, other_machines: dict) -> dict | None:
    """Row `name`'s result measured on `machine` where one was, else its latest (None: not measured)."""
    for result in every_result(name, rows, other_machines):
        if machine is not None and result.get("machine") == machine:
            return result
    return rows.get(name)


def seed_spreads(rows: dict, other_machines: dict) -> dict:
    """{row: {metric: |seed 0 - seed 1|}} of each row measured under a second seed (`<row>-seed-1`) and under seed 0 on
    the same machine (a pair from two machines would count their rebuild of the parts as noise)."""
    spreads = {}
    for name, result in rows.items():
        base = name.removesuffix("-seed-1")
        first_result = on_machine(base, result.get("machine"), rows, other_machines)
        if name != base and first_result and first_result.get("machine") == result.get("machine"):
            first, second = first_result["metrics"], result["metrics"]
            spreads[base] = {key: abs(first[key] - second[key]) for key in BETTER if key in first and key in second}
    return spreads


def verdict(key: str, paper: tuple[float, float], here: tuple[float, float], spread: float | None) -> str:
    """"held", "reversed" or "within noise": whether the row moved the metric the paper's way from the full row.
    `paper` / `here`: (full row, ablated row); `spread`: the recipe's seed spread of the metric (None: unmeasured)."""
    if spread is not None and abs(here[1] - here[0]) <= spread:
        return "within noise"
    return "held" if worse(key, here[1], here[0]) == worse(key, paper[1], paper[0]) else "reversed"


def claims(rows: dict, paper: dict, other_machines: dict) -> list[dict]:
    """Every metric the paper reports for both the full row and another measured row: the paper's change, ours and
    the verdict. `rows`: {name: result with "metrics"}; `paper`: {name: {metric: the paper's figure}};
    `other_machines`: {name: [results]} of rows measured again elsewhere. Each row is compared with the full row of
    its own machine where one was measured there ("across_machines": False)."""
    if FULL_ROW not in rows:
        return []
    spread = {}  # the noise of the recipe: per metric, the largest spread of any row measured under two seeds
    for row_spread in seed_spreads(rows, other_machines).values():
        for key, value in row_spread.items():
            spread[key] = max(spread.get(key, 0.0), value)
    found = []
    for name, figures in paper.items():
        if name == FULL_ROW or name not in rows:
            continue
        machine = rows[name].get("machine")
        full_result = on_machine(FULL_ROW, machine, rows, other_machines)
        full = full_result["metrics"]
        across = machine is not None and full_result.get("machine") not in (None, machine)
        for key in BETTER:
            if key in figures and key in paper[FULL_ROW] and key in rows[name]["metrics"]:
                pair_paper = (paper[FULL_ROW][key], figures[key])
                pair_here = (full[key], rows[name]["metrics"][key])
                if any(math.isnan(value) for value in pair_here):  # SIM of a row whose clips were all too short
                    continue
                found.append({"row": name, "metric": key, "paper": pair_paper, "here": pair_here,
                              "verdict": verdict(key, pair_paper, pair_here, spread.get(key)),
                              "across_machines": across})
    return found


def change(key: str, pair: tuple[float, float]) -> str:
    word = "worse" if worse(key, pair[1], pair[0]) else ("same" if pair[1] == pair[0] else "better")
    return f"{shown(key, pair[0])} -> {shown(key, pair[1])} ({word})"


def mix_rows(rows: dict, families: dict) -> list[tuple[str, float, dict]]:
    """(family, understanding share, metrics) of every measured row of a task-mix family, by family then share.
    `families`: {row name: (family, share)}."""
    found = [(family, share, rows[name]["metrics"]) for name, (family, share) in families.items() if name in rows]
    return sorted(found, key=lambda item: (item[0], item[1]))


def measured_where(rows: dict, order, other_machines: dict) -> list[str]:
    """Page lines naming the rows each machine measured, where they came from more than one (each machine trains
    the main job's parts anew, so a comparison across machines carries that rebuild too); none otherwise."""
    by_machine = {}
    for name in order:
        for result in every_result(name, rows, other_machines):
            if "machine" in result:
                by_machine.setdefault(result["machine"], []).append(name)
    if len(by_machine) < 2:
        return []
    return ["", "Where the rows were measured: each machine built the main job's parts (codec, speaker encoder, text "
            "LLM, the shared stage 1 and the decoder) anew by the same commands and seeds, and the codec's training "
            "is not bit-reproducible, so a difference between rows of two machines carries that rebuild as well "
            "as the row's change.", "",
            *(f"- {machine}: " + ", ".join(f"`{name}`" for name in names) for machine, names in by_machine.items()),
            "", "Each row's claims compare it with the full row of its own machine where that machine measured one."]


def ablation_page(results: dict) -> str:
    """The Markdown page of `results`: {"command", "machine", "recipe": [lines], "rows": {name: result},
    "descriptions": {name: text}, "paper": {name: {metric: figure}}, "paper_rows": {name: the paper's row name},
    "mix": {name: (family, understanding share)}, "main_job": metrics or None, "other_machines": {name: [results]}
    (optional: rows measured again on another machine, each such result shown below its row)}."""
    rows, paper, other_machines = results["rows"], results["paper"], results.get("other_machines", {})
    lines = ["# The paper's claims at this project's scale", "",
             f"Written by `{results['command']}` on {results['machine']}. Each row is trained and scored by the same "
             "short recipe; a cell shows the score here and, in brackets, the paper's figure for the same row.", "",
             "## The recipe", "", *(f"- {line}" for line in results["recipe"]), "", "## Rows", ""]
    lines += ["| row | what it changes | " + " | ".join(title for _, title, _, _ in METRICS) + " |",
              "|---|---|" + "---|" * len(METRICS)]
    for name, description in results["descriptions"].items():
        if name not in rows:
            continue
        measured, figures = rows[name]["metrics"], paper.get(name, {})
        cells = [shown(key, measured.get(key)) + (f" ({shown(key, figures[key])})" if key in figures else "")
                 for key in BETTER]
        lines.append(f"| {name} | {description} | " + " | ".join(cells) + " |")
        for other in other_machines.get(name, []):
            lines.append(f"| {name}, another machine | the same row, measured on {other['machine']} | "
                         + " | ".join(shown(key, other["metrics"].get(key)) for key in BETTER) + " |")
    if main_job := results.get("main_job"):
        lines.append("| main job (full length) | the main job's model (`make quickstart`): Baseline-Semantic's path "
                     "at full length, scored on the evaluation's default item counts (e.g. ASR 100, TTS 60) | "
                     + " | ".join(shown(key, main_job.get(key)) for key in BETTER) + " |")
    else:
        lines += ["", "The main job's model was not at hand for this page: its last full-length figures are in "
                  "[RESULTS.md](RESULTS.md)."]
    lines += measured_where(rows, results["descriptions"], other_machines)
    if missing := [name for name in results["descriptions"] if name not in rows]:
        lines += ["", "Not measured yet: " + ", ".join(f"`{name}`" for name in missing) + "."]
    if semantic := {name: r["metrics"]["tts_semantic_whisper_wer"] for name, r in rows.items()
                    if "tts_semantic_whisper_wer" in r["metrics"]}:
        lines += ["", "The USTokens the AcousticGPT rows wrote, rendered instead by the USToken-reading decoder "
                  "(Whisper's TTS WER): " + ", ".join(f"{name} {shown('tts_semantic_whisper_wer', value)}"
                                                      for name, value in semantic.items()) + "."]
    if FULL_ROW in rows:
        reference = rows[FULL_ROW]["metrics"]
        lines += ["", "The judges' WER on the reference recordings of the same TTS sentences: Whisper "
                  f"{shown('asr_wer', reference['tts_whisper_wer_reference'])}, pocketsphinx "
                  f"{shown('asr_wer', reference['tts_pocketsphinx_wer_reference'])}."]

    lines += ["", "## The paper's claims", ""]
    if found := claims(rows, paper, other_machines):
        lines += ["| row | metric | paper (full -> row) | here (full -> row) | the paper's direction |",
                  "|---|---|---|---|---|"]
        for claim in found:
            paper_row = results.get("paper_rows", {}).get(claim["row"])
            row = claim["row"] + (f" (paper: {paper_row})" if paper_row else "") + (
                " (against the full row of another machine)" if claim["across_machines"] else "")
            lines.append(f"| {row} | {TITLES[claim['metric']]} | {change(claim['metric'], claim['paper'])} | "
                         f"{change(claim['metric'], claim['here'])} | {claim['verdict']} |")
        lines += ["", "\"within noise\": the change here is no larger than the largest spread between two seeds of a "
                  "row (below); without a second seed every direction is read as measured."]
    else:
        lines.append(f"None yet: the claims compare rows with `{FULL_ROW}`, which is not measured yet.")

    if spreads := seed_spreads(rows, other_machines):
        lines += ["", "## Seed spread", "", "| row | " + " | ".join(TITLES[key] for key in BETTER) + " |",
                  "|---|" + "---|" * len(BETTER)]
        for name, spread in spreads.items():
            cells = [shown(key, spread[key]) if FORMATS[key] != "percent" else f"{100 * spread[key]:.1f} pts"
                     for key in BETTER if key in spread]
            lines.append(f"| {name} (seed 0 vs 1) | " + " | ".join(cells) + " |")

    if mixed := mix_rows(rows, results.get("mix", {})):
        lines += ["", "## Task mix", "",
                  "The paper's synergy claim: with dual tokens, more understanding data also helps generation and "
                  "vice versa, while single-token models trade one for the other. Here the understanding tasks' "
                  "share of the batches moves at the same number of steps.", "",
                  "| model | understanding share | ASR WER (seen voices) | TTS WER (Whisper) |", "|---|---|---|---|"]
        lines += [f"| {family} | {100 * share:.0f}% | {shown('asr_wer', m['asr_wer'])} | "
                  f"{shown('tts_whisper_wer', m['tts_whisper_wer'])} |" for family, share, m in mixed]
    lines += ["", "![The key columns](ablations.png)", ""]
    return "\n".join(lines)


def plot_ablations(results: dict, path: str | Path) -> Path:
    """ASR and TTS WER (seen voices) per row, the paper's figure as a dot beside each bar, and the task-mix rows'
    WER against the understanding share; returns the PNG's path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, paper = results["rows"], results["paper"]
    names = [name for name in results["descriptions"] if name in rows]
    mixed = mix_rows(rows, results.get("mix", {}))
    if len({share for _, share, _ in mixed}) < 2:  # a curve needs a second mix
        mixed = []
    panels = [("asr_wer", "ASR WER"), ("tts_whisper_wer", "TTS WER (Whisper)")]
    figure, axes = plt.subplots(1, len(panels) + bool(mixed), figsize=(5 * (len(panels) + bool(mixed)), 4),
                                squeeze=False)
    for axis, (key, title) in zip(axes[0], panels):
        positions = range(len(names))
        axis.bar(positions, [100 * rows[name]["metrics"][key] for name in names], label="here")
        marked = [(i, 100 * paper[name][key]) for i, name in enumerate(names) if key in paper.get(name, {})]
        if marked:
            axis.plot(*zip(*marked), "o", color="black", label="paper")
        axis.set_xticks(list(positions), names, rotation=60, ha="right", fontsize=7)
        axis.set(title=title, ylabel="%")
        axis.legend(fontsize=7)
    if mixed:
        axis = axes[0][-1]
        for family in dict.fromkeys(family for family, _, _ in mixed):
            points = [(100 * share, m) for f, share, m in mixed if f == family]
            for key, style in (("asr_wer", "-o"), ("tts_whisper_wer", "--s")):
                axis.plot([s for s, _ in points], [100 * m[key] for _, m in points], style,
                          label=f"{family}: {TITLES[key]}")
        axis.set(title="task mix", xlabel="understanding share of the batches (%)", ylabel="WER (%)")
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return Path(path)


__all__ = ["METRICS", "ablation_page", "claims", "plot_ablations", "row_metrics", "seed_spreads", "verdict"]
