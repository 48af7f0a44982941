"""The model card of a trained DualSpeechLM folder, rendered from `model_cards/dualspeechlm.md`.

Every number on the card comes from files the training wrote into the folder: `evaluation.json`
(the `model-index` results, the results table and its picture), `training_log.json` (steps and final losses),
`loss.png`, `samples/`, `config.json` (sizes) and `model.safetensors` (parameter count), and from the corpus
manifest (what the model knows). Nothing is typed by hand.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from safetensors import safe_open

from dualspeechlm.model_cards import DUALSPEECHLM_TEMPLATE

# task -> (Hub task type, corpus config it was scored on, readable name)
TASK_TYPES = {
    "asr": ("automatic-speech-recognition", "speech", "speech recognition (ASR)"),
    "ser": ("audio-classification", "style", "speaking-style recognition (SER)"),
    "sqa": ("question-answering", "qa", "spoken question answering (SQA)"),
    "s2tt": ("translation", "translation", "speech-to-text translation (S2TT)"),
    "tts": ("text-to-speech", "speech", "text-to-speech (TTS)"),
    "vc": ("audio-to-audio", "vc", "voice conversion (VC)"),
    "sc": ("audio-to-audio", "qa", "spoken answers to spoken questions (SC)"),
    "t2st": ("text-to-speech", "translation", "text-to-speech translation (T2ST)"),
}
# evaluation.json key -> (metric type, readable name); bookkeeping keys are not metrics
METRICS = {
    "wer": ("wer", "WER"),
    "whisper_wer_same_audio": ("wer", "Whisper tiny.en WER on the same audio"),
    "accuracy": ("accuracy", "accuracy"),
    "bleu": ("bleu", "BLEU"),
    "sim": ("cosine_similarity", "speaker similarity to the reference (SIM)"),
    "no_speech": ("no_speech_rate", "share of outputs without speech"),
    "whisper_wer_generated": ("wer", "Whisper tiny.en WER on generated speech"),
    "pocketsphinx_wer_generated": ("wer", "pocketsphinx WER on generated speech"),
    "pocketsphinx_lm_wer_generated": ("wer", "pocketsphinx (corpus language model) WER on generated speech"),
    "whisper_wer_reference": ("wer", "Whisper tiny.en WER on the reference recordings"),
    "pocketsphinx_wer_reference": ("wer", "pocketsphinx WER on the reference recordings"),
    "pocketsphinx_lm_wer_reference": ("wer", "pocketsphinx (corpus language model) WER on the reference recordings"),
}
BOOKKEEPING = {"examples", "seconds_generated", "samples"}
# diagnostics, in the results table but not the model-index (no task of their own on the Hub):
# tts_resynthesis is speech rendered from the reference audio's USTokens
DIAGNOSTICS = {"tts_resynthesis"}


def eval_results(evaluation: dict, dataset_id: str, dataset_name: str) -> list[EvalResult]:
    """One `EvalResult` per split, task and metric of an `evaluation.json` dict (NaN scores, e.g. a
    SIM with no speech to embed, are left out: the Hub's model-index takes finite numbers only)."""
    results = []
    for split, tasks in evaluation["splits"].items():
        for task, scores in tasks.items():
            if task in DIAGNOSTICS:
                continue
            task_type, config, task_name = TASK_TYPES[task]
            for key, value in scores.items():
                if key in BOOKKEEPING or not isinstance(value, (int, float)) or not math.isfinite(value):
                    continue
                metric_type, metric_name = METRICS.get(key, (key, key))
                results.append(EvalResult(
                    task_type=task_type, task_name=task_name,
                    dataset_type=dataset_id, dataset_name=dataset_name, dataset_config=config, dataset_split=split,
                    metric_type=metric_type, metric_name=metric_name, metric_value=round(float(value), 4)))
    return results


def results_table(evaluation: dict) -> str:
    """A Markdown table: one row per task and metric, one column per split."""
    splits = list(evaluation["splits"])
    rows = {}  # (task, metric key) -> {split: value}, in the order the evaluation reports them
    for split, tasks in evaluation["splits"].items():
        for task, scores in tasks.items():
            for key, value in scores.items():
                if key not in BOOKKEEPING and isinstance(value, (int, float)):
                    rows.setdefault((task, key), {})[split] = value
    lines = ["| task | metric | " + " | ".join(f"`{split}`" for split in splits) + " |",
             "|---|---|" + "---|" * len(splits)]
    for (task, key), values in rows.items():
        cells = [f"{values[split]:.3f}" if split in values else "" for split in splits]
        lines.append(f"| {task.upper()} | {METRICS.get(key, (key, key))[1]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parameter_count(folder: Path) -> int:
    """Parameters in the folder's `model.safetensors`, read from its header (no weights loaded)."""
    with safe_open(str(folder / "model.safetensors"), framework="pt") as weights:
        return sum(math.prod(weights.get_slice(name).get_shape()) for name in weights.keys())


def training_summary(folder: Path) -> str:
    """Steps, runtime and the last logged losses, from `training_log.json` (the Trainer's log history)."""
    log_file = folder / "training_log.json"
    if not log_file.is_file():
        return "No training log in the folder."
    log = json.loads(log_file.read_text())
    last = [entry for entry in log if "loss" in entry]
    final = next((entry for entry in reversed(log) if "train_runtime" in entry), {})
    losses = ", ".join(f"{key} {last[-1][key]:.3f}" for key in last[-1] if key.endswith("loss")) if last else "none"
    runtime = f" in {final['train_runtime'] / 60:.0f} min" if "train_runtime" in final else ""
    return (f"Trained with the HF `Trainer` (`dualspeechlm-train-dualspeechlm`) for {final.get('step', '?')} "
            f"steps{runtime}; last logged losses: {losses}.")


def limitations(evaluation: dict | None, knows: str | None = None) -> str:
    """The model's reach, stated from what it was trained on (`knows`: `what_the_model_knows` of its corpus) and from
    its own evaluation."""
    text = "A research model. " + (knows or (
        "Unless its training data says otherwise it was trained on the small synthetic corpus that "
        "`dualspeechlm-data build` makes (a fixed grammar of English sentences, Spanish and French translations, a "
        "handful of synthesized voices): it does not understand or speak natural speech outside that domain.")) + (
        " Do not use it to imitate a real person's voice without consent.")
    test = (evaluation or {}).get("splits", {}).get("test", {})
    facts = []
    if "wer" in test.get("asr", {}):
        facts.append(f"ASR WER on unseen test sentences is {test['asr']['wer']:.1%}")
    tts = test.get("tts", {})
    if "whisper_wer_generated" in tts and "whisper_wer_reference" in tts:
        facts.append(f"Whisper tiny.en's WER on its synthesized speech is {tts['whisper_wer_generated']:.1%} "
                     f"against {tts['whisper_wer_reference']:.1%} on the reference recordings")
    if facts:
        text += " Measured on its test split: " + "; ".join(facts) + "."
    return text


def acoustic_role(config: dict, codec_reads_no_codes: bool) -> str:
    """What the card says of AcousticGPT beside its size: whether it was trained and whether generation runs it."""
    if config.get("acoustic_loss_weight", 1.0) == 0:
        return "; not trained (acoustic_loss_weight 0): the model speaks through a codec that reads no codes"
    return "; trained, but not run when generating: the codec reads no codes" if codec_reads_no_codes else ""


def describe_architecture(config: dict, folder: Path) -> dict:
    """The card's architecture rows, from `config.json` and the USTokenizer's config."""
    text, acoustic = config["text_config"], config["acoustic_config"]
    ustokenizer_config = folder / "ustokenizer" / "config.json"
    ustokenizer = json.loads(ustokenizer_config.read_text()) if ustokenizer_config.is_file() else {}
    encoder = ustokenizer.get("encoder_config", {})
    codec = config.get("codec_config") or {}
    depth = codec.get("ustoken_decode_codebooks")
    reads_voice = "" if codec.get("speaker_embedding_size") is None else " and the speaker embedding"
    reads_tokens = ("" if codec.get("ustoken_vocab_size") is None else
                    f"; its decoder reads the USTokens + {'every' if depth is None else depth} "
                    f"codebook(s){reads_voice}")
    return {
        "backbone": (f"{text['model_type']}, {text['num_hidden_layers']} layers, width {text['hidden_size']}, "
                     f"vocabulary {text['vocab_size']} (text + {config['num_speech_tokens']} USTokens)"),
        "ustokenizer": (f"Whisper encoder ({encoder.get('encoder_layers', '?')} layers, width "
                        f"{encoder.get('d_model', '?')}) -> 25 Hz -> {ustokenizer.get('codebook_size', '?')}-code VQ"),
        "acoustic": (f"{acoustic['num_hidden_layers']} layers, width {acoustic['hidden_size']}, speaker embedding "
                     f"{acoustic['speaker_embedding_size']}"
                     + acoustic_role(config, depth == 0 and bool(reads_tokens))),
        "codec": (f"{codec.get('model_type', 'none')}: {acoustic['num_codebooks']} x {acoustic['codebook_size']} "
                  f"codes at {config['codec_frame_rate']:g} Hz, {config['codec_sampling_rate']} Hz audio"
                  f"{reads_tokens}"),
    }


def results_picture(evaluation: dict, path: Path) -> Path:
    """A PNG of the evaluation's headline numbers per split: what the model hears (ASR WER, SER and SQA accuracy,
    S2TT BLEU / 100) and how well its speech is heard (Whisper tiny.en WER on generated speech beside the reference
    recordings' for TTS, VC and SC)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heard = {"ASR WER": ("asr", "wer", 1), "SER accuracy": ("ser", "accuracy", 1),
             "SQA accuracy": ("sqa", "accuracy", 1), "S2TT BLEU / 100": ("s2tt", "bleu", 0.01)}
    spoken = [task for task in ("tts", "vc", "sc") if any(task in tasks for tasks in evaluation["splits"].values())]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4))
    splits = list(evaluation["splits"].items())
    width = 0.8 / len(splits)
    for index, (split, tasks) in enumerate(splits):
        values = [tasks.get(task, {}).get(key, float("nan")) * scale for task, key, scale in heard.values()]
        left.bar([i - 0.4 + (index + 0.5) * width for i in range(len(heard))], values, width, color=f"C{index}",
                 label=split)
        for kind_index, (kind, hatch) in enumerate((("generated", None), ("reference", "//"))):
            values = [tasks.get(task, {}).get(f"whisper_wer_{kind}", float("nan")) for task in spoken]
            slot = index * 2 + kind_index
            right.bar([i - 0.4 + (slot + 0.5) * width / 2 for i in range(len(spoken))], values, width / 2,
                      color=f"C{index}", hatch=hatch, edgecolor="white", label=f"{split}, {kind}")
    left.set_xticks(range(len(heard)), list(heard), fontsize=8)
    left.set(title="understanding (higher is better, but WER)", ylim=(0, 1))
    right.set_xticks(range(len(spoken)), [task.upper() for task in spoken])
    right.set(title="Whisper tiny.en WER on speech (lower is better)")
    for axis in (left, right):
        axis.legend(fontsize=7)
        axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path


def figures(folder: Path, figures_dir: Path | None, evaluation: dict | None) -> str:
    """The card's pictures and sample links: the loss curves (`loss.png`), the results picture (written into
    `figures_dir`, where the card will live) and a few of the evaluation's generated samples."""
    lines = []
    if (folder / "loss.png").is_file():
        lines.append("![training losses](loss.png)")
    if evaluation and figures_dir is not None:
        results_picture(evaluation, figures_dir / "evaluation.png")
        lines.append("![per-task results](evaluation.png)")
    samples = sorted((folder / "samples").glob("*.wav"))[:6] if (folder / "samples").is_dir() else []
    if samples:
        lines.append("Generated speech from the evaluation: "
                     + " · ".join(f"[{path.stem}](samples/{path.name})" for path in samples) + ".")
    return "\n\n".join(lines) or "No pictures: the folder has no training log or evaluation yet."


def render_model_card(folder: str | Path, repo_id: str, dataset_id: str | None = None,
                      dataset_name: str = "DualSpeechLM embedded corpus", license: str = "apache-2.0",
                      knows: str | None = None, figures_dir: str | Path | None = None) -> ModelCard:
    """The card of the model folder, to be saved as the repo's README.md; `dataset_id` is the Hub
    dataset it was trained and evaluated on (the published corpus); `knows`: what the model was trained on, in plain
    words (`space_examples.what_the_model_knows`); `figures_dir`: where the card's results picture is written."""
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    evaluation_file = folder / "evaluation.json"
    evaluation = json.loads(evaluation_file.read_text()) if evaluation_file.is_file() else None
    model_name = repo_id.split("/")[-1]
    card_data = ModelCardData(
        model_name=model_name, license=license, language=["en", "es", "fr"], library_name="transformers",
        pipeline_tag="automatic-speech-recognition", datasets=[dataset_id] if dataset_id else None,
        tags=["dualspeechlm", "speech", "text-to-speech", "speech-llm", "custom_code"],
        eval_results=eval_results(evaluation, dataset_id or "local", dataset_name) if evaluation else None)
    dataset_link = f"[{dataset_id}](https://huggingface.co/datasets/{dataset_id})" if dataset_id else dataset_name
    return ModelCard.from_template(
        card_data, template_path=str(DUALSPEECHLM_TEMPLATE), model_name=model_name, repo_id=repo_id,
        parameters=(f"{parameter_count(folder) / 1e6:.1f} M (LLM + AcousticGPT + codec; USTokenizer and speaker "
                    "encoder are in subfolders)"),
        results_table=results_table(evaluation) if evaluation else "Not evaluated yet (`dualspeechlm-evaluate`).",
        training=training_summary(folder), dataset_link=dataset_link, limitations=limitations(evaluation, knows),
        figures=figures(folder, Path(figures_dir) if figures_dir is not None else None, evaluation),
        **describe_architecture(config, folder))


__all__ = ["eval_results", "render_model_card", "results_table"]
