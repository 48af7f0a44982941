"""Stage 3: train DualSpeechLM on the eight tasks with the HF Trainer, then evaluate it.

    1. inputs cached once per corpus split (training/token_cache.py): USTokens of every audio, codec
       codes + speaker embeddings of every generation target, from stage 1's tokenizer, the codec
       and the speaker encoder;
    2. the model: stage 1's LLM (the one trained along with the tokenizer, its `<a_k>` rows from the
       tokenizer's adapter; or `--llm`, any causal LM) wrapped by
       `DualSpeechLMForConditionalGeneration.from_text_model` (vocabulary + `<audio>`, `</audio>`,
       `<a_k>`), a fresh AcousticGPT; optionally PEFT LoRA on the backbone (`--lora`);
    3. single-task batches drawn with per-task weights (training/multitask.py), loss = LLM CE
       (text answers / target USTokens) + AcousticGPT CE, each term logged, the validation loss
       every `eval_steps`;
    4. the model folder (model + processor: text tokenizer, USTokenizer, codec, speaker encoder;
       ready for the ASR / TTS pipelines), loss plot, then training/evaluate_dualspeechlm.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import PartialState
from torch.utils.data import Subset
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, TrainingArguments

from dualspeechlm.codecs import load_codec
from dualspeechlm.configuration_dualspeechlm import DualSpeechLMConfig
from dualspeechlm.feature_extraction_ustokenizer import USTokenizerFeatureExtractor
from dualspeechlm.modeling_codec_tokens import load_speech_tokenizer
from dualspeechlm.modeling_dualspeechlm import DualSpeechLMForConditionalGeneration
from dualspeechlm.pipelines_dualspeechlm import save_for_pipelines
from dualspeechlm.processing_dualspeechlm import DualSpeechLMProcessor
from dualspeechlm.speaker_encoder import SpeakerEncoderModel
from dualspeechlm.tasks import TASKS, get_task

from .multitask import DualSpeechLMCollator, TaskBatchSampler, TaskExamples
from .plots import plot_losses
from .recipe_cli import PresetRecipe, recipe_from_args, recipe_parser
from .text_llm import TEXT_LLM, UNDERSTANDING_LLM
from .token_cache import cached_tokens
from .trainer import BatchSamplerTrainer, IdleCoresCallback, precision_arguments

ALL_TASKS = tuple(TASKS)


@dataclass
class DualSpeechLMRecipe(PresetRecipe):
    """Every setting of stage 3; `tiny()` runs on 2 CPU cores, `paper()` is the paper's setup."""

    corpus: str = "data/corpus"
    ustokenizer: str = "models/ustokenizer"
    codec: str = "models/mel-codec"
    speaker_encoder: str = "models/speaker-encoder"
    # a causal LM folder / Hub id with its tokenizer; None: stage 1's LLM (see start_from_reader)
    llm: str | None = None
    # With `llm` None and a tokenizer trained along with its LLM (its `understanding_llm/`), start from that LLM, which
    # already reads the tokens, with each `<a_k>` row set to the stage-1 adapter's embedding of code k; otherwise
    # (or False) from stage 1's `text_llm/` with the new rows at the mean of the old ones.
    start_from_reader: bool = True
    # A trained DualSpeechLM folder / Hub id to fine-tune: model and processor (tokenizer, USTokenizer,
    # codec, speaker encoder) come from it, and `llm`, `ustokenizer`, `codec`, `speaker_encoder` are unused.
    init_from: str | None = None
    # With `init_from`: a codec folder (or a transformers codec, see `load_codec`) that replaces the model's own, and a
    # fresh AcousticGPT shaped for its codes, the rest of the model kept: how a model trained semantic-only (the tiny
    # preset) starts to speak through AcousticGPT on another codec.
    new_codec: str | None = None
    output_dir: str = "models/dualspeechlm"
    cache_dir: str = "data/encoder_cache"
    tasks: tuple[str, ...] = ALL_TASKS
    task_weights: dict = field(default_factory=dict)  # default: proportional to each task's examples
    acoustic_config: dict = field(default_factory=lambda: dict(
        hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=768,
        max_position_embeddings=1024, dropout=0.0))
    # 0: AcousticGPT is not trained, and its pass is spared (about half of a generation batch's time); the model then
    # speaks only through a codec that decodes the USTokens and the voice alone (`dualspeechlm-set-codec`)
    acoustic_loss_weight: float = 1.0
    # How the saved model writes USTokens (its `config.speech_generation`: GenerationConfig fields, replacing the
    # default whole); None keeps the default, the paper's sampling (T 0.6, top-p 0.9, up to 400 tokens)
    speech_generation: dict | None = None
    # Other DualSpeechLMConfig fields of how the model trains, e.g. the paper's ablations `coc_modes: [both]` (no
    # Chain-of-Condition) or `semantic_supervision: false`
    model_config: dict = field(default_factory=dict)
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    steps: int = 1000  # the tiny preset: 9,000 without AcousticGPT (presets/dualspeechlm_tiny.yaml)
    batch_size: int = 16
    group_by_length: bool = True  # batches of like-length examples, less padding (TaskBatchSampler)
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    max_grad_norm: float = 1.0  # gradient clipping (0: none), as in TrainingArguments
    weight_decay: float = 0.05
    logging_steps: int = 50
    save_steps: int = 500
    eval_steps: int = 250  # validation loss every so many steps (0: never)
    eval_examples: int = 32  # validation examples per task
    seed: int = 0
    use_idle_cores: bool = False  # raise the threads to the cores other processes leave idle (the main job does)
    precision: str = "fp32"  # "fp32" | "bf16" | "auto" (the paper preset): see trainer.precision_arguments

    preset_stem = "dualspeechlm"  # presets/dualspeechlm_<name>.yaml


def training_settings(recipe: DualSpeechLMRecipe) -> dict:
    """The DualSpeechLMConfig fields the recipe sets: how the model trains and writes speech."""
    settings = dict(acoustic_loss_weight=recipe.acoustic_loss_weight)
    if recipe.speech_generation is not None:
        settings["speech_generation"] = dict(recipe.speech_generation)
    config_fields = {config_field.name for config_field in dataclasses.fields(DualSpeechLMConfig)}
    if unknown := sorted(set(recipe.model_config) - config_fields):
        raise ValueError(f"model_config: {unknown} are not DualSpeechLMConfig fields")
    if twice := sorted(set(recipe.model_config) & set(settings)):
        raise ValueError(f"model_config: set {twice} through their own recipe fields")
    return {**recipe.model_config, **settings}


def model_to_fine_tune(recipe: DualSpeechLMRecipe) -> DualSpeechLMForConditionalGeneration:
    """The `init_from` model (with its codec), with the recipe's `training_settings`."""
    config = DualSpeechLMConfig.from_pretrained(recipe.init_from)
    config.update(training_settings(recipe))
    return DualSpeechLMForConditionalGeneration.from_pretrained(recipe.init_from, config=config)


def load_parts(recipe: DualSpeechLMRecipe, fine_tuned: DualSpeechLMForConditionalGeneration | None = None):
    """(USTokenizer model, its feature extractor, codec, speaker encoder), in eval mode. With `init_from`, the codec
    is the `new_codec` or that of the model to fine-tune (`fine_tuned`, loaded here when not given)."""
    if recipe.new_codec and not recipe.init_from:
        raise ValueError("new_codec replaces the codec of the model to fine-tune: it needs init_from")
    if recipe.init_from:
        processor = DualSpeechLMProcessor.from_pretrained(recipe.init_from)
        codec = (load_codec(recipe.new_codec) if recipe.new_codec
                 else (fine_tuned or model_to_fine_tune(recipe)).codec_model)
        return (processor.ustokenizer.eval(), processor.feature_extractor, codec.eval(),
                processor.speaker_encoder.eval())
    ustokenizer = load_speech_tokenizer(recipe.ustokenizer)
    extractor = USTokenizerFeatureExtractor.from_pretrained(recipe.ustokenizer)
    codec = load_codec(recipe.codec).eval()
    speaker_encoder = SpeakerEncoderModel.from_pretrained(recipe.speaker_encoder).eval()
    return ustokenizer, extractor, codec, speaker_encoder


def cached_splits(recipe: DualSpeechLMRecipe, split: str, parts) -> dict:
    """{corpus config: cached tokens of `split`} for the configs the recipe's tasks read; with codec codes only
    when the recipe trains AcousticGPT."""
    ustokenizer, extractor, codec, speaker_encoder = parts
    codec = codec if recipe.acoustic_loss_weight > 0 else None
    configs = sorted({get_task(task).corpus_config for task in recipe.tasks})
    return {config: cached_tokens(recipe.corpus, config, split, ustokenizer, extractor, codec, speaker_encoder,
                                  recipe.cache_dir) for config in configs}


def validation_examples(recipe: DualSpeechLMRecipe, parts) -> Subset:
    """The first `eval_examples` validation examples of each task: the loss watched during training."""
    examples = TaskExamples(cached_splits(recipe, "validation", parts), recipe.tasks)
    picked = {}
    for index, task in enumerate(examples.task_of):
        picked.setdefault(task, []).append(index)
    return Subset(examples, [i for indices in picked.values() for i in indices[: recipe.eval_examples]])


def build_model(recipe: DualSpeechLMRecipe, ustokenizer, codec,
                fine_tuned: DualSpeechLMForConditionalGeneration | None = None):
    """(model, text tokenizer): the backbone + speech vocabulary + a fresh AcousticGPT, or the model
    to fine-tune (`init_from`: `fine_tuned`, loaded here when not given; with a fresh AcousticGPT for `codec` when the
    recipe gives a `new_codec`); either with the recipe's `training_settings`."""
    if recipe.init_from:
        model = fine_tuned or model_to_fine_tune(recipe)
        if recipe.new_codec:
            model.reset_acoustic_gpt(codec)
        return model, AutoTokenizer.from_pretrained(recipe.init_from)
    reader = Path(recipe.ustokenizer) / UNDERSTANDING_LLM
    from_reader = recipe.llm is None and recipe.start_from_reader and (reader / "config.json").is_file()
    source = recipe.llm or str(reader if from_reader else Path(recipe.ustokenizer) / TEXT_LLM)
    config = AutoConfig.from_pretrained(source)
    tied = config.tie_word_embeddings
    if from_reader:
        # the adapter's code embeddings are ~130x longer than the text rows (tiny preset: norm 142 against 1.1); as
        # rows of a tied output head they would swamp every logit, so the reader's head is untied, a copy of the table
        config.tie_word_embeddings = False
    llm, tokenizer = AutoModelForCausalLM.from_pretrained(source, config=config), AutoTokenizer.from_pretrained(source)
    if from_reader and tied:
        with torch.no_grad():
            llm.get_output_embeddings().weight.copy_(llm.get_input_embeddings().weight)
    model = DualSpeechLMForConditionalGeneration.from_text_model(
        llm, tokenizer, num_speech_tokens=ustokenizer.config.codebook_size,
        acoustic_config=recipe.acoustic_config, codec=codec, **training_settings(recipe))
    if from_reader:
        offset, count = model.config.speech_token_offset, model.config.num_speech_tokens
        with torch.no_grad():
            model.get_input_embeddings().weight[offset:offset + count] = ustokenizer.code_embeddings()
    return model, tokenizer


def save_model_folder(folder: Path, model, tokenizer, parts) -> None:
    """The model (its codec inside), its processor (text tokenizer on top; USTokenizer + feature extractor and
    speaker encoder in subfolders) and the pipeline code: the folder answers
    `pipeline("automatic-speech-recognition" | "text-to-speech", model=folder, trust_remote_code=True)`."""
    ustokenizer, extractor, _, speaker_encoder = parts
    processor = DualSpeechLMProcessor(extractor, tokenizer, ustokenizer, speaker_encoder=speaker_encoder)
    save_for_pipelines(model, processor, folder)


def train_dualspeechlm(recipe: DualSpeechLMRecipe) -> Path:
    """Run stage 3's training (module docstring); returns the saved model folder."""
    output_dir = Path(recipe.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    fine_tuned = model_to_fine_tune(recipe) if recipe.init_from else None  # loaded once, for its codec and weights
    parts = load_parts(recipe, fine_tuned)
    ustokenizer, extractor, codec, speaker_encoder = parts
    train = TaskExamples(cached_splits(recipe, "train", parts), recipe.tasks)
    validation = validation_examples(recipe, parts) if recipe.eval_steps else None
    # here, not earlier: building the token cache draws random numbers only when it is missing
    torch.manual_seed(recipe.seed)
    model, tokenizer = build_model(recipe, ustokenizer, codec, fine_tuned)
    trained = model
    if recipe.lora:
        from .lora import apply_lora

        trained = apply_lora(model, recipe.lora_r, recipe.lora_alpha, recipe.lora_dropout)
    args = TrainingArguments(
        output_dir=str(output_dir / "checkpoints"), max_steps=recipe.steps,
        per_device_train_batch_size=recipe.batch_size,
        learning_rate=recipe.learning_rate, lr_scheduler_type="cosine", warmup_steps=recipe.warmup_steps,
        weight_decay=recipe.weight_decay, adam_beta2=0.95, logging_steps=recipe.logging_steps,
        save_steps=recipe.save_steps, save_total_limit=1, report_to=[], seed=recipe.seed,
        eval_strategy="steps" if validation else "no", eval_steps=recipe.eval_steps or None,
        per_device_eval_batch_size=recipe.batch_size, prediction_loss_only=True,
        remove_unused_columns=False, dataloader_num_workers=0, dataloader_pin_memory=False, label_names=["labels"],
        max_grad_norm=recipe.max_grad_norm, **precision_arguments(recipe.precision),
    )
    # a preset weighs every task; a recipe training fewer keeps the weights of its own
    weights = {task: weight for task, weight in recipe.task_weights.items() if task in recipe.tasks}
    sampler = TaskBatchSampler(train.task_of, recipe.batch_size, weights, seed=recipe.seed,
                               lengths=train.lengths() if recipe.group_by_length else None)
    collator = DualSpeechLMCollator(tokenizer, model.config)
    trainer = BatchSamplerTrainer(model=trained, args=args, train_dataset=train, eval_dataset=validation,
                                  batch_sampler=sampler, data_collator=collator,
                                  callbacks=[IdleCoresCallback()] if recipe.use_idle_cores else None)
    checkpoints = sorted((output_dir / "checkpoints").glob("checkpoint-*"))
    trainer.train(resume_from_checkpoint=str(checkpoints[-1]) if checkpoints else None)
    trainer.leave_process_group()
    if not trainer.is_world_process_zero():  # under `accelerate launch`, one process writes the folder
        return output_dir
    if recipe.lora:
        from .lora import merge_lora

        model = merge_lora(trained)
    save_model_folder(output_dir, model, tokenizer, parts)
    plot_losses(trainer.state.log_history, output_dir / "loss.png", ("loss", "llm_loss", "acoustic_loss", "eval_loss"))
    (output_dir / "training_log.json").write_text(json.dumps(trainer.state.log_history, indent=1))
    return output_dir


def main(argv=None) -> None:
    parser = recipe_parser(DualSpeechLMRecipe, __doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", choices=ALL_TASKS, default=None, type=str)
    parser.add_argument("--lora", action="store_true", default=None, help="LoRA on the backbone (the paper's setup)")
    parser.add_argument("--start-from-reader", action=argparse.BooleanOptionalAction, default=None,
                        help="start from stage 1's LLM trained along with the tokenizer, when it has one "
                             "(default: on)")
    parser.add_argument("--skip-evaluation", action="store_true")
    args = vars(parser.parse_args(argv))
    skip_evaluation = args.pop("skip_evaluation")
    if args["tasks"] is not None:
        args["tasks"] = tuple(args["tasks"])
    recipe = recipe_from_args(DualSpeechLMRecipe, args)
    folder = train_dualspeechlm(recipe)
    if not skip_evaluation and PartialState().is_main_process:
        from .evaluate_dualspeechlm import evaluate_model

        evaluate_model(folder, recipe.corpus, recipe.cache_dir)


if __name__ == "__main__":
    main()
