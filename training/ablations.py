"""The paper's baselines and ablations, each trained and scored by one short recipe: `dualspeechlm-ablate`.

    dualspeechlm-ablate                                   # every row not measured yet, then the page
    dualspeechlm-ablate --rows dualspeechlm baseline-semantic
    dualspeechlm-ablate --page-only                       # the page from the rows measured so far
    dualspeechlm-ablate --rows dualspeechlm --again       # measure a row again here, keeping another machine's

The rows (`ROWS`) share the main job's corpus, Whisper, codec, speaker encoder, stage 1's text LLM and encoder cache
(`make corpus whisper codec speaker-encoder text-llm encoder-cache`). Each row runs, in `--work-dir`:
    1. its stage 1: the tiny preset at `tokenizer_steps` (the rows that change nothing there share one), or, for
       Baseline-Acoustic, no training: the codec's first codebook as its speech tokens (`CodecTokensModel`);
    2. once, the USToken-reading decoder of the shared stage 1 (`decoder_steps`): the semantic-only rows speak
       through it, and it renders the USTokens the AcousticGPT rows write as a second reading of their speech;
       Baseline-Acoustic speaks through one of its own, the codec's decoder taught the same way to read its tokens;
    3. stage 3: the tiny preset at `stage3_steps`, AcousticGPT trained on the codec's codes unless the row speaks
       through the decoder;
    4. the evaluation of the first `eval_limit` examples of every task on both test splits.
Two runners of one recipe may run side by side on different rows (on 2 cores, two runs on one thread each finish
sooner than one on two) once the shared stage 1 and the decoder exist: each reads ablations.json again before it
writes it. After each row the page is written again (`--output-dir`, training/ablation_page.py): ABLATIONS.md for
people, ablations.png, and ablations.json, which holds every row's results and the recipe they were measured
under. A row found there is not run again and a stopped stage 3 resumes from its last checkpoint, so the same
command continues a stopped run, also from a fresh clone holding the page; results or models of another recipe are
refused. Each machine rebuilds the main job's parts, so rows are best compared with the full row of their own
machine: `--again` measures the given rows on this machine where ablations.json holds them from another one, and
keeps that machine's result beside the new one ("other_machines") for the rows it measured.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from dualspeechlm.codecs import load_codec
from dualspeechlm.feature_extraction_ustokenizer import USTokenizerFeatureExtractor
from dualspeechlm.modeling_codec_tokens import CodecTokensModel
from dualspeechlm.tasks import UNDERSTANDING_TASKS

from .ablation_page import ablation_page, plot_ablations, row_metrics
from .encoder_cache import corpus_identity
from .evaluate_dualspeechlm import DEFAULT_LIMITS, evaluate_model
from .machine import current_commit, describe_machine
from .recipe_cli import PresetRecipe, recipe_from_args, recipe_parser
from .text_llm import TEXT_LLM
from .train_codec_decoder import main as train_codec_decoder
from .train_codec_decoder import set_codec
from .train_dualspeechlm import DualSpeechLMRecipe, train_dualspeechlm
from .train_ustokenizer import USTokenizerRecipe, train_ustokenizer

ACOUSTIC = {"acoustic_loss_weight": 1.0}  # speaks through AcousticGPT (the paper's model)
SEMANTIC = {"acoustic_loss_weight": 0.0}  # speaks through the USToken-reading decoder (Baseline-Semantic)


@dataclass(frozen=True)
class Row:
    """One row of the table. Figures are fractions (WER 0.0422 for the paper's 4.22%), BLEU as it is."""

    name: str
    description: str
    stage3: dict  # DualSpeechLMRecipe fields over the short recipe's
    tokenizer: dict = field(default_factory=dict)  # USTokenizerRecipe fields of its own stage 1 ({}: the shared one)
    codec_tokens: bool = False  # the LLM reads and writes the codec's first codebook instead of USTokens
    understanding_share: float | None = None  # the understanding tasks' share of the batches (None: the preset's)
    family: str | None = None  # the model the task-mix rows vary
    paper: dict = field(default_factory=dict)  # the paper's figures for the row
    paper_row: str | None = None  # the paper's row, where this one stands in for it

    @property
    def speaks_through_acoustic_gpt(self) -> bool:
        return self.stage3["acoustic_loss_weight"] > 0

    @property
    def own_stage1(self) -> bool:
        """Whether the row's tokens are its own, not the shared stage 1's."""
        return bool(self.tokenizer) or self.codec_tokens


ROWS = (
    Row("dualspeechlm", "USTokens in; USTokens, then AcousticGPT's codec codes out", ACOUSTIC,
        family="dualspeechlm",
        paper={"asr_wer": 0.0422, "s2tt_bleu": 19.74, "ser_accuracy": 0.6092, "tts_whisper_wer": 0.0925,
               "tts_sim": 0.90}),
    Row("baseline-semantic", "USTokens in and out, spoken by the USToken-reading decoder", SEMANTIC,
        family="baseline-semantic",
        paper={"asr_wer": 0.0570, "s2tt_bleu": 11.13, "ser_accuracy": 0.5191, "tts_whisper_wer": 0.2172,
               "tts_sim": 0.80}),
    Row("baseline-acoustic", "codec tokens in and out (the codec's first codebook), spoken by the codec's decoder "
        "taught to read them", SEMANTIC, codec_tokens=True,
        paper={"asr_wer": 0.3652, "s2tt_bleu": 1.91, "ser_accuracy": 0.5490, "tts_whisper_wer": 0.2211,
               "tts_sim": 0.88}),
    Row("no-understanding-loss", "stage 1 without the understanding loss", ACOUSTIC,
        tokenizer={"tokenizer_config": {"understanding_weight": 0.0}},
        paper={"asr_wer": 0.0481, "tts_whisper_wer": 0.0859}),
    Row("no-reconstruction-loss", "stage 1 without the reconstruction loss", ACOUSTIC,
        tokenizer={"tokenizer_config": {"reconstruction_weight": 0.0}},
        paper={"asr_wer": 0.0474, "tts_whisper_wer": 0.5250}),
    Row("kmeans-tokens", "plain k-means of the Whisper features instead of USTokens", ACOUSTIC,
        tokenizer={"kmeans_tokens": True}, paper={"asr_wer": 0.0556}, paper_row="HuBERT tokens"),
    Row("no-semantic-supervision", "no LLM cross-entropy on the target USTokens",
        {**ACOUSTIC, "model_config": {"semantic_supervision": False}},
        paper={"asr_wer": 0.0431, "tts_whisper_wer": 1.6756}),
    Row("no-coc", "AcousticGPT always reads prompt and USTokens (no Chain-of-Condition)",
        {**ACOUSTIC, "model_config": {"coc_modes": ["both"]}}, paper={"tts_whisper_wer": 0.0996}),
    Row("dualspeechlm-seed-1", "the full row, stage 3 under seed 1", {**ACOUSTIC, "seed": 1}),
    Row("baseline-semantic-seed-1", "Baseline-Semantic, stage 3 under seed 1", {**SEMANTIC, "seed": 1}),
    *(Row(f"{family}-understanding-{round(100 * share)}",
          f"{'the full row' if family == 'dualspeechlm' else 'Baseline-Semantic'}, understanding tasks "
          f"{round(100 * share)}% of the batches", stage3, understanding_share=share, family=family)
      for family, stage3 in (("dualspeechlm", ACOUSTIC), ("baseline-semantic", SEMANTIC)) for share in (0.2, 0.5)),
)
ROW_NAMES = tuple(row.name for row in ROWS)


@dataclass
class AblationRecipe(PresetRecipe):
    """The short recipe every row shares, and where its inputs and outputs are; `tiny()` fits a row in well under
    an hour on 2 CPU cores (presets/ablations_tiny.yaml)."""

    corpus: str = "data/corpus"
    whisper: str = "models/whisper-tiny.en"
    cache_dir: str = "data/encoder_cache"
    codec: str = "models/mel-codec"
    speaker_encoder: str = "models/speaker-encoder"
    text_llm: str = f"models/ustokenizer/{TEXT_LLM}"  # stage 1's text LLM, copied into every row's stage 1
    main_job: str = "models/dualspeechlm"  # the main job's model, whose full-length scores the page shows beside
    work_dir: str = "models/ablations"
    output_dir: str = "docs"
    tokenizer_steps: int = 4000
    decoder_steps: int = 8000
    stage3_steps: int = 9000
    eval_limit: int = 200
    tokenizer: dict = field(default_factory=dict)  # USTokenizerRecipe fields over its tiny preset, for every row
    stage3: dict = field(default_factory=dict)  # DualSpeechLMRecipe fields over its tiny preset, for every row
    decoder: dict = field(default_factory=dict)  # more dualspeechlm-train-codec-decoder flags, e.g. {batch-size: 8}

    preset_stem = "ablations"  # presets/ablations_<name>.yaml

    def identity(self) -> dict:
        """What a row's scores depend on: the recipe less the folders it reads and writes, and the corpus."""
        places = {"corpus", "whisper", "cache_dir", "codec", "speaker_encoder", "text_llm", "main_job", "work_dir",
                  "output_dir"}
        fields = {name: value for name, value in dataclasses.asdict(self).items() if name not in places}
        return json.loads(json.dumps({**fields, "corpus": corpus_identity(self.corpus)}))


def merged(*layers: dict) -> dict:
    """The layers' fields, later ones first; dict-valued fields (e.g. `tokenizer_config`) merged a level deep."""
    fields = {}
    for layer in layers:
        for name, value in layer.items():
            both_dicts = isinstance(value, dict) and isinstance(fields.get(name), dict)
            fields[name] = {**fields[name], **value} if both_dicts else value
    return fields


def task_mix(weights: dict, understanding_share: float) -> dict:
    """`weights` (percent per task) rescaled so that the understanding tasks take `understanding_share` of them, each
    side keeping its own proportions."""
    sides = {True: {}, False: {}}
    for task, weight in weights.items():
        sides[task in UNDERSTANDING_TASKS][task] = weight
    shares = {True: understanding_share, False: 1.0 - understanding_share}
    return {task: 100 * shares[side] * weight / sum(tasks.values())
            for side, tasks in sides.items() for task, weight in tasks.items()}


def understanding_share(weights: dict) -> float:
    return sum(weight for task, weight in weights.items() if task in UNDERSTANDING_TASKS) / sum(weights.values())


def preset_task_weights(recipe: AblationRecipe) -> dict:
    """The task weights of stage 3 in the rows that keep the preset's mix."""
    return recipe.stage3.get("task_weights") or DualSpeechLMRecipe.tiny().task_weights


def stage1_recipe(row: Row, recipe: AblationRecipe, folder: Path) -> USTokenizerRecipe:
    return USTokenizerRecipe.tiny(**merged(
        dict(corpus=recipe.corpus, whisper=recipe.whisper, cache_dir=recipe.cache_dir, output_dir=str(folder),
             steps=recipe.tokenizer_steps, eval_limit=recipe.eval_limit, whisper_baseline=False),
        recipe.tokenizer, row.tokenizer))


def stage3_recipe(row: Row, recipe: AblationRecipe, tokenizer: Path, folder: Path) -> DualSpeechLMRecipe:
    fields = merged(dict(corpus=recipe.corpus, ustokenizer=str(tokenizer), codec=recipe.codec,
                         speaker_encoder=recipe.speaker_encoder, cache_dir=recipe.cache_dir, output_dir=str(folder),
                         steps=recipe.stage3_steps), recipe.stage3, row.stage3)
    if row.understanding_share is not None:
        fields["task_weights"] = task_mix(preset_task_weights(recipe), row.understanding_share)
    return DualSpeechLMRecipe.tiny(**fields)


class AblationRunner:
    """Runs rows of one recipe: models in its work folder, results in its output folder's ablations.json (module
    docstring); `command` is the command line the page names, `log` reports progress."""

    def __init__(self, recipe: AblationRecipe, command: str = "dualspeechlm-ablate", log=print):
        self.recipe, self.command, self.log = recipe, command, log
        self.work, self.output = Path(recipe.work_dir), Path(recipe.output_dir)
        self.results_file = self.output / "ablations.json"

    def check_inputs(self) -> None:
        recipe = self.recipe
        needed = {recipe.corpus: "corpus", recipe.whisper: "whisper", recipe.codec: "codec",
                  recipe.speaker_encoder: "speaker-encoder", recipe.text_llm: "text-llm"}
        if missing := [f"{path} (make {target})" for path, target in needed.items() if not Path(path).exists()]:
            raise FileNotFoundError("the rows train on the main job's parts; missing: " + ", ".join(missing))

    def saved(self) -> dict | None:
        """ablations.json's content, None before the first page."""
        return json.loads(self.results_file.read_text()) if self.results_file.is_file() else None

    def measured(self) -> dict:
        """{row: result} of the rows measured so far under this recipe (ablations.json); ValueError when the file
        holds another recipe's."""
        if (saved := self.saved()) is None:
            return {}
        if saved["identity"] != self.recipe.identity():
            raise ValueError(f"{self.results_file} holds rows of another recipe: give another --output-dir, or remove "
                             "it (and the --work-dir) to measure every row again under this one")
        return saved["rows"]

    def other_machines(self) -> dict:
        """{row: [results]}: other machines' results of the rows measured again on a later one (`--again`)."""
        return (self.saved() or {}).get("other_machines", {})

    def claim_work_folder(self) -> None:
        """Record the recipe in the work folder, or refuse a folder whose models were trained under another one."""
        self.work.mkdir(parents=True, exist_ok=True)
        stamp, identity = self.work / "recipe.json", self.recipe.identity()
        if stamp.is_file() and json.loads(stamp.read_text()) != identity:
            raise ValueError(f"{self.work} holds models of another recipe ({stamp}): give another --work-dir, or "
                             "remove it")
        stamp.write_text(json.dumps(identity, indent=1) + "\n")

    def stage1(self, row: Row) -> Path:
        """The row's stage-1 folder, trained when missing (the shared one for rows that change nothing there; the
        codec's tokens, untrained, with the text LLM beside them, for a `codec_tokens` row)."""
        folder = self.work / "tokenizers" / (row.name if row.own_stage1 else "shared")
        if not (folder / "config.json").is_file():
            self.log(f"[{row.name}] stage 1 -> {folder}")
            shutil.copytree(self.recipe.text_llm, folder / TEXT_LLM, dirs_exist_ok=True)
            if row.codec_tokens:
                USTokenizerFeatureExtractor().save_pretrained(folder)  # the processor's checks of input audio
                CodecTokensModel.from_codec(load_codec(self.recipe.codec)).save_pretrained(folder)
            else:
                train_ustokenizer(stage1_recipe(row, self.recipe, folder))
        return folder

    def decoder(self, row: Row) -> Path:
        """The codec decoder that reads `row`'s tokens (the shared stage 1's, unless the row has `codec_tokens`),
        trained when missing."""
        folder = self.work / row.name / "decoder" if row.codec_tokens else self.work / "decoder"
        if not (folder / "config.json").is_file():
            tokenizer = self.stage1(row)
            self.log(f"[{row.name}] decoder of its tokens -> {folder}")
            recipe = self.recipe
            flags = [item for name, value in recipe.decoder.items() for item in (f"--{name}", str(value))]
            train_codec_decoder(["--codec", recipe.codec, "--ustokenizer", str(tokenizer), "--corpus", recipe.corpus,
                                 "--cache-dir", recipe.cache_dir, "--speaker-encoder", recipe.speaker_encoder,
                                 "--whisper", recipe.whisper, "--output-dir", str(folder),
                                 "--steps", str(recipe.decoder_steps), *flags])
        return folder

    def run_row(self, row: Row) -> dict:
        """Train and score `row`: its result (metrics, minutes per part, machine, commit)."""
        minutes, started = {}, time.perf_counter()

        def lap(name: str) -> None:
            nonlocal started
            minutes[name] = round((time.perf_counter() - started) / 60, 2)
            started = time.perf_counter()

        tokenizer = self.stage1(row)
        lap("stage1")
        decoder = None if row.tokenizer else self.decoder(row)  # none reads the tokenizer ablations' tokens
        lap("decoder")
        model = self.work / row.name / "model"
        if not (model / "config.json").is_file():
            self.log(f"[{row.name}] stage 3 -> {model}")
            train_dualspeechlm(stage3_recipe(row, self.recipe, tokenizer, model))
        if not row.speaks_through_acoustic_gpt:
            set_codec(model, decoder)
        lap("stage3")
        self.log(f"[{row.name}] evaluation")
        recipe, limits = self.recipe, dict.fromkeys(DEFAULT_LIMITS, self.recipe.eval_limit)
        evaluation = evaluate_model(model, recipe.corpus, recipe.cache_dir, recipe.whisper, limits,
                                    self.work / row.name / "evaluation",
                                    semantic_codec=decoder if row.speaks_through_acoustic_gpt else None)
        lap("evaluation")
        return {"metrics": row_metrics(evaluation), "minutes": minutes, "machine": describe_machine(),
                "commit": current_commit()}

    def run(self, rows: tuple[Row, ...], again: bool = False) -> None:
        """Every row of `rows` not measured yet (`again`: not measured on this machine yet), those sharing a stage 1
        one after another; the page is written again after each."""
        self.check_inputs()
        self.measured()  # refuses another recipe's results before anything is trained
        self.claim_work_folder()
        here = describe_machine()
        for row in sorted(rows, key=lambda row: row.own_stage1):  # the shared stage 1's rows first
            if (done := self.measured().get(row.name)) and not (again and done.get("machine") != here):
                self.log(f"[{row.name}] measured already ({self.results_file})")
                continue
            self.record(row.name, self.run_row(row))

    def record(self, name: str, result: dict) -> None:
        """Writes the page with `result` as row `name`'s, keeping the row's results from other machines. Reads
        ablations.json again first: a runner beside this one adds rows."""
        rows, other_machines = self.measured(), self.other_machines()
        earlier = other_machines.get(name, []) + ([rows[name]] if name in rows else [])
        if kept := [other for other in earlier if other.get("machine") != result.get("machine")]:
            other_machines = {**other_machines, name: kept}
        self.write_page({**rows, name: result}, other_machines)

    def main_job_metrics(self) -> dict | None:
        """The main job's full-length scores: from its evaluation where the folder is at hand, else those recorded
        in ablations.json (a fresh clone holding the page keeps them), else None."""
        evaluation = Path(self.recipe.main_job) / "evaluation.json"
        if evaluation.is_file():
            return row_metrics(json.loads(evaluation.read_text()))
        return (self.saved() or {}).get("main_job")

    def results(self, measured: dict, other_machines: dict) -> dict:
        """The page's input (`ablation_page`) and ablations.json's content."""
        preset_share = understanding_share(preset_task_weights(self.recipe))
        rows = {row.name: measured[row.name] for row in ROWS if row.name in measured}
        others = {row.name: other_machines[row.name] for row in ROWS if row.name in other_machines}
        machines = {result["machine"] for result in rows.values()} | {
            other["machine"] for results in others.values() for other in results}
        return {
            "command": self.command,
            "machine": "; ".join(sorted(machines)) or describe_machine(),
            "identity": self.recipe.identity(),
            "recipe": recipe_lines(self.recipe, rows),
            "rows": rows,
            "descriptions": {row.name: row.description for row in ROWS},
            "paper": {row.name: row.paper for row in ROWS if row.paper},
            "paper_rows": {row.name: row.paper_row for row in ROWS if row.paper_row},
            "mix": {row.name: (row.family, row.understanding_share or preset_share) for row in ROWS if row.family},
            "main_job": self.main_job_metrics(),
            "other_machines": others,
        }

    def write_page(self, measured: dict | None = None, other_machines: dict | None = None) -> Path:
        """ABLATIONS.md, ablations.json and ablations.png of `measured` and `other_machines` (default: those of
        ablations.json) in the output folder; returns the page's path."""
        results = self.results(self.measured() if measured is None else measured,
                               self.other_machines() if other_machines is None else other_machines)
        self.output.mkdir(parents=True, exist_ok=True)
        self.results_file.write_text(json.dumps(results, indent=1) + "\n")
        if results["rows"]:
            plot_ablations(results, self.output / "ablations.png")
        page = self.output / "ABLATIONS.md"
        page.write_text(ablation_page(results))
        return page


def recipe_lines(recipe: AblationRecipe, rows: dict) -> list[str]:
    """The recipe, in the words of the page."""
    minutes = [sum(result["minutes"].values()) for result in rows.values()]
    lines = [
        f"corpus `{recipe.corpus}` ({json.dumps(corpus_identity(recipe.corpus)['corpus_sizes'])}), Whisper "
        f"`{recipe.whisper}`, codec `{recipe.codec}`, speaker encoder `{recipe.speaker_encoder}`: the main job's",
        f"stage 1: the tiny preset at {recipe.tokenizer_steps:,} steps (the main job: 4,000), from the main job's "
        "text LLM; stage 3 starts from the LLM stage 1 trained along with the tokens, as in the main job",
        f"stage 3: the tiny preset at {recipe.stage3_steps:,} steps (the main job: 9,000), AcousticGPT trained on "
        "the codec's codes in the rows that speak through it",
        f"the USToken-reading decoder: {recipe.decoder_steps:,} steps on the shared stage 1's tokens (the main job: "
        "8,000); Baseline-Acoustic's decoder as many on its codec tokens",
        f"evaluation: the first {recipe.eval_limit} examples of every task on `test` (seen voices) and "
        "`test_unseen_voice`; TTS is judged on the seen voices",
        "seed 0 everywhere except the seed rows' stage 3",
    ]
    if recipe.tokenizer or recipe.stage3 or recipe.decoder:
        lines.append(f"over the presets: stage 1 {recipe.tokenizer}, stage 3 {recipe.stage3}, decoder "
                     f"{recipe.decoder}")
    if minutes:
        lines.append(f"a row took {min(minutes):.0f}-{max(minutes):.0f} min (its stage 1 and the decoder counted in "
                     "the row that trained them)")
    return lines


def page_command(argv: list[str]) -> str:
    """The command line that writes the whole page: `dualspeechlm-ablate` with `argv`'s recipe and folder flags, less
    the choice of rows (`--rows`, `--page-only`, `--again`), which differs between the runs that fill one page."""
    kept, in_rows = [], False
    for arg in argv:
        if arg.startswith("--"):
            in_rows = arg == "--rows"
            if arg in ("--rows", "--page-only", "--again"):
                continue
        if not in_rows:
            kept.append(arg)
    return shlex.join(["dualspeechlm-ablate", *kept])


def main(argv=None) -> None:
    parser = recipe_parser(AblationRecipe, __doc__.split("\n\n")[0])
    parser.add_argument("--rows", nargs="+", choices=ROW_NAMES, default=list(ROW_NAMES),
                        help="run in this order, rows of the shared stage 1 first (default: every row)")
    parser.add_argument("--page-only", action="store_true", help="write the page from the rows measured so far")
    parser.add_argument("--again", action="store_true",
                        help="measure the rows on this machine also where another one measured them (both kept)")
    args = vars(parser.parse_args(argv))
    command = page_command(sys.argv[1:] if argv is None else argv)
    chosen, page_only, again = args.pop("rows"), args.pop("page_only"), args.pop("again")
    runner = AblationRunner(recipe_from_args(AblationRecipe, args), command)
    if not page_only:
        by_name = {row.name: row for row in ROWS}
        runner.run(tuple(by_name[name] for name in dict.fromkeys(chosen)), again)
    print(f"wrote {runner.write_page()}")


if __name__ == "__main__":
    main()
