"""Stage 1: train the USTokenizer through a frozen text LLM on ASR, SER and SQA, then evaluate it.

    1. text LLM: a pretrained causal LM (`--llm`), or, offline, a byte-level BPE + a small Llama
       trained on the corpus' training text (training/text_llm.py), then frozen;
    2. the frozen Whisper encoder's outputs, cached once per corpus split (training/encoder_cache.py);
    3. the tokenizer's small parts trained with the HF Trainer on the cached features, loss =
       1 * commitment + 45 * reconstruction + 5 * understanding (training/understanding.py), and in the
       tiny preset + 5 * the transcript CTC (the small LLM alone does not teach the tokens the words);
       with `--kmeans-tokens` the tokens are instead plain k-means clusters of the encoder output's pair means,
       fitted on the cached training split first and then frozen: the same losses train only the adapter, the
       reconstruction decoder, the transcript CTC head (and the LLM when it trains), the input-token baseline;
    4. evaluation on `test` (sentences never in training) and `test_unseen_voice` (training/evaluate_ustokenizer.py):
       evaluation.json + evaluation.md, beside the loss curves in loss.png.

The output folder holds the tokenizer (`USTokenizerModel` + its feature extractor, loadable with
`AutoModel` / `AutoFeatureExtractor`, `trust_remote_code=True` included), the transcript CTC head when trained
(`transcript_head.safetensors`), `text_llm/` and, when the LLM trained along (`freeze_llm=False`),
`understanding_llm/`: that LLM after stage 1, which reads the tokens. `dualspeechlm-evaluate-ustokenizer` scores
such a folder again.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments
from vector_quantize_pytorch.vector_quantize_pytorch import kmeans

from dualspeechlm.configuration_ustokenizer import USTokenizerConfig
from dualspeechlm.feature_extraction_ustokenizer import USTokenizerFeatureExtractor
from dualspeechlm.modeling_ustokenizer import USTokenizerModel, conv_output_lengths
from dualspeechlm.processing.text_tokenizer import train_text_tokenizer

from .evaluate_ustokenizer import evaluate_ustokenizer
from .plots import plot_losses
from .recipe_cli import PresetRecipe, recipe_from_args, recipe_parser
from .text_llm import (
    TEXT_LLM,
    UNDERSTANDING_LLM,
    small_llm_config,
    stage3_task_documents,
    text_llm_corpus,
    train_text_llm,
    understanding_examples,
)
from .trainer import IdleCoresCallback, LossTermsTrainer, precision_arguments
from .understanding import UnderstandingCollator, USTokenizerForUnderstanding, understanding_dataset


@dataclass
class USTokenizerRecipe(PresetRecipe):
    """Every setting of stage 1; `tiny()` runs on 2 CPU cores, `paper()` is the paper's setup."""

    corpus: str = "data/corpus"
    whisper: str = "models/whisper-tiny.en"
    output_dir: str = "models/ustokenizer"
    cache_dir: str = "data/encoder_cache"
    llm: str | None = None  # a pretrained causal LM (folder or Hub id); None: train a small one here
    text_vocab_size: int = 1024
    llm_config: dict = field(default_factory=dict)  # overrides of small_llm_config
    llm_steps: int = 600
    llm_batch_size: int = 32
    llm_learning_rate: float = 1e-3
    tokenizer_config: dict = field(default_factory=dict)  # USTokenizerConfig fields
    tokenizer_preset: str = "tiny"
    freeze_llm: bool = True
    steps: int = 1000
    batch_size: int = 16
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    max_grad_norm: float = 1.0  # gradient clipping (0: none), as in TrainingArguments
    logging_steps: int = 50
    eval_limit: int | None = None  # utterances per evaluated split (None: all)
    whisper_baseline: bool = True
    seed: int = 0
    # the tokens are k-means clusters of the Whisper encoder output's pair means (USTokenizerConfig.kmeans_tokens),
    # fitted on at most `kmeans_frames` 25 Hz frames of the training split, drawn at random
    kmeans_tokens: bool = False
    kmeans_frames: int = 50_000
    use_idle_cores: bool = False  # raise the threads to the cores other processes leave idle (the main job does)
    precision: str = "fp32"  # "fp32" | "bf16" | "auto" (the paper preset): see trainer.precision_arguments

    preset_stem = "ustokenizer"  # presets/ustokenizer_<name>.yaml


def text_llm(recipe: USTokenizerRecipe, train_examples: list[dict]):
    """(LLM, text tokenizer): the pretrained one, the one trained by an earlier run, or a new one."""
    folder = Path(recipe.output_dir) / TEXT_LLM
    source = recipe.llm or (str(folder) if (folder / "config.json").is_file() else None)
    if source is not None:
        return AutoModelForCausalLM.from_pretrained(source), AutoTokenizer.from_pretrained(source)
    documents = text_llm_corpus(train_examples, seed=recipe.seed) + stage3_task_documents(recipe.corpus)
    tokenizer = train_text_tokenizer(documents, recipe.text_vocab_size)
    config = small_llm_config(tokenizer, **recipe.llm_config)
    model = train_text_llm(documents, tokenizer, config, folder, steps=recipe.llm_steps,
                           batch_size=recipe.llm_batch_size, learning_rate=recipe.llm_learning_rate, seed=recipe.seed,
                           precision=recipe.precision)
    return model, tokenizer


@torch.no_grad()
def token_path_frames(ustokenizer: USTokenizerModel, dataset: datasets.Dataset, max_frames: int,
                      batch_size: int = 32) -> torch.Tensor:
    """The pre-VQ latents `[min(max_frames, all frames), codebook_dim]` of `max_frames` 25 Hz frames drawn at random
    (torch's global generator) from the cached encoder outputs of `dataset` (`understanding_dataset` rows); with
    `kmeans_tokens` these are the pair means of the encoder's 50 Hz frames."""
    states = dataset.select_columns(["encoder_hidden_states", "num_frames"])
    frames_per_row = conv_output_lengths(torch.as_tensor(states["num_frames"]), ustokenizer.config.downsample_stride)
    drawn = torch.zeros(int(frames_per_row.sum()), dtype=torch.bool)
    drawn[torch.randperm(len(drawn))[:max_frames]] = True
    loader = torch.utils.data.DataLoader(states, batch_size=batch_size,
                                         collate_fn=UnderstandingCollator(pad_token_id=0))  # no ids to pad
    kept, start = [], 0
    for batch in loader:
        latents, _, mask = ustokenizer.latents(batch["encoder_hidden_states"].to(ustokenizer.device),
                                               batch["encoder_lengths"].to(ustokenizer.device))
        frames = latents[mask]  # row by row, as `frames_per_row` counts them
        kept.append(frames[drawn[start : start + len(frames)].to(frames.device)])
        start += len(frames)
    return torch.cat(kept)


def fit_kmeans_tokens(ustokenizer: USTokenizerModel, dataset: datasets.Dataset, max_frames: int, seed: int) -> None:
    """Fit the codebook of a `kmeans_tokens` tokenizer: k-means (the codebook's own: random data points, then
    `kmeans_iters` Lloyd iterations, Euclidean) of `token_path_frames`, seeded by `seed` whatever the random state."""
    config = ustokenizer.config
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        frames = token_path_frames(ustokenizer, dataset, max_frames)
        centroids, _ = kmeans(frames.float()[None], config.codebook_size, config.kmeans_iters)
    ustokenizer.set_codebook(centroids[0])


def train_ustokenizer(recipe: USTokenizerRecipe) -> dict:
    """Run stage 1 end to end (see the module docstring); returns the evaluation results."""
    torch.manual_seed(recipe.seed)
    output_dir = Path(recipe.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    train_examples = understanding_examples(recipe.corpus, "train")
    llm, text_tokenizer = text_llm(recipe, train_examples)

    preset = USTokenizerConfig.tiny if recipe.tokenizer_preset == "tiny" else USTokenizerConfig.paper
    config = preset(**{"llm_hidden_size": llm.config.hidden_size, "kmeans_tokens": recipe.kmeans_tokens,
                       **recipe.tokenizer_config})
    ustokenizer = USTokenizerModel.from_whisper(recipe.whisper, config)
    feature_extractor = USTokenizerFeatureExtractor()
    alphabet = ("".join(sorted(set("".join(ex["transcript"] for ex in train_examples))))
                if config.transcript_ctc_weight > 0 else None)
    model = USTokenizerForUnderstanding(ustokenizer, llm, freeze_llm=recipe.freeze_llm, alphabet=alphabet)

    train_data = understanding_dataset(recipe.corpus, recipe.cache_dir, "train", train_examples, text_tokenizer,
                                       ustokenizer.encoder, feature_extractor, alphabet)
    if config.kmeans_tokens:
        fit_kmeans_tokens(ustokenizer, train_data, recipe.kmeans_frames, recipe.seed)
    args = TrainingArguments(
        output_dir=str(output_dir / "checkpoints"), max_steps=recipe.steps,
        per_device_train_batch_size=recipe.batch_size, learning_rate=recipe.learning_rate,
        lr_scheduler_type="cosine", warmup_steps=recipe.warmup_steps, weight_decay=0.0,
        logging_steps=recipe.logging_steps, save_strategy="no", report_to=[], seed=recipe.seed,
        remove_unused_columns=False, dataloader_num_workers=0, dataloader_pin_memory=False, label_names=[],
        train_sampling_strategy="group_by_length", length_column_name="num_frames",  # little padding
        max_grad_norm=recipe.max_grad_norm, **precision_arguments(recipe.precision),
    )
    collator = UnderstandingCollator(text_tokenizer.pad_token_id)
    callbacks = [IdleCoresCallback()] if recipe.use_idle_cores else []
    trainer = LossTermsTrainer(model=model, args=args, train_dataset=train_data, data_collator=collator,
                               callbacks=callbacks)
    trainer.train()
    ustokenizer.save_pretrained(output_dir)
    feature_extractor.save_pretrained(output_dir)
    if alphabet:
        model.save_transcript_head(output_dir)
    if not recipe.freeze_llm:  # the LLM that learned to read the tokens: stage 3 can start from it
        llm.save_pretrained(output_dir / UNDERSTANDING_LLM)
        text_tokenizer.save_pretrained(output_dir / UNDERSTANDING_LLM)
    plot_losses(trainer.state.log_history, output_dir / "loss.png",
                ("loss", "commitment_loss", "reconstruction_loss", "understanding_loss", "transcript_ctc_loss"))

    return evaluate_ustokenizer(model, text_tokenizer, feature_extractor, recipe.corpus, recipe.cache_dir,
                                recipe.whisper, output_dir, recipe.eval_limit, recipe.whisper_baseline,
                                header={"recipe": dataclasses.asdict(recipe), "train_examples": len(train_data)})


def main(argv=None) -> None:
    parser = recipe_parser(USTokenizerRecipe, __doc__.split("\n\n")[0])
    parser.add_argument("--freeze-llm", dest="freeze_llm", action="store_true", default=None,
                        help="keep the LLM frozen (the paper's setting, the paper preset's default)")
    parser.add_argument("--no-freeze-llm", dest="freeze_llm", action="store_false", default=None,
                        help="train the LLM along with the tokenizer (the tiny preset's default)")
    parser.add_argument("--kmeans-tokens", dest="kmeans_tokens", action="store_true", default=None,
                        help="tokens = k-means clusters of the pair-mean Whisper encoder output, fitted first and "
                             "frozen (the input-token baseline); the rest of stage 1 trains as usual")
    parser.add_argument("--no-whisper-baseline", dest="whisper_baseline", action="store_false", default=None)
    parser.add_argument("--text-llm-only", action="store_true",
                        help="train the text LLM into <output-dir>/text_llm and stop (a later run starts from it); "
                             "the main job runs this beside dualspeechlm-cache-encoder")
    args = vars(parser.parse_args(argv))
    text_llm_only = args.pop("text_llm_only")
    recipe = recipe_from_args(USTokenizerRecipe, args)
    if text_llm_only:
        text_llm(recipe, understanding_examples(recipe.corpus, "train"))
    else:
        train_ustokenizer(recipe)


if __name__ == "__main__":
    main()
