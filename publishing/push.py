"""`dualspeechlm-push`: publish a trained model, its corpus and the demo Space as three Hub repos.

    dualspeechlm-push --repo-id you/dualspeechlm-tiny              # model + corpus + Space
    dualspeechlm-push --repo-id you/dualspeechlm-tiny --output-dir hub_repos   # write them locally

Each repo is first staged as the exact folder that will be uploaded:

- model `<repo-id>`, from the model folder (weights with the codec's, configs, code, processor, tokenizer, speaker
  encoder, generation config, evaluation, samples, loss curves); the staging adds README.md: the model card
  (`publishing/model_card.py`, with what the model knows from the corpus) and its results picture; `checkpoints/`
  (training state) stays home.
- dataset `<repo-id>-corpus`, from the corpus folder (parquet per config and split, manifest); its dataset card
  loads from the repo id.
- Space `<repo-id>-demo`, from `spaces_demo/` (app, README with the Space YAML, requirements); the staging adds
  `model_id.txt` naming the model repo, `models`/`datasets` in the YAML and, from the corpus, the clickable examples
  (`examples/`, `publishing/space_examples.py`), with a few items of the model's samples page (`--samples`, by
  default `docs/samples` where `make samples` wrote it).

Uploads go through `huggingface_hub` (`HF_ENDPOINT`, `HF_TOKEN` or `hf auth login` apply). The
source folders are only read: a refused token or a network failure mid-upload raises
`PublishError` saying what happened, and rerunning the command finishes the job.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx2
from huggingface_hub import HfApi, RepoCard
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

from dualspeechlm.processing.corpus.builder import CARD_DATASET_PATH
from dualspeechlm.spaces_demo import SPACE_DIR

from .model_card import render_model_card
from .space_examples import has_samples_page, training_facts, what_the_model_knows, write_space_examples


class PublishError(RuntimeError):
    """The Hub refused or could not be reached; nothing local was changed."""


@dataclass(frozen=True)
class StagedRepo:
    repo_id: str
    repo_type: str  # "model", "dataset" or "space"
    folder: Path


def stage_model(model_dir: Path, out: Path, repo_id: str, dataset_id: str | None,
                corpus_dir: Path | None = None) -> StagedRepo:
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"no trained model at {model_dir}: train one with `make quickstart`")
    shutil.copytree(model_dir, out, ignore=shutil.ignore_patterns("checkpoints", "__pycache__"))
    knows = what_the_model_knows(training_facts(corpus_dir)) if corpus_dir is not None else None
    render_model_card(model_dir, repo_id, dataset_id, knows=knows, figures_dir=out).save(out / "README.md")
    return StagedRepo(repo_id, "model", out)


def stage_dataset(corpus_dir: Path, out: Path, repo_id: str) -> StagedRepo:
    if not (corpus_dir / "README.md").is_file():
        raise FileNotFoundError(f"no corpus at {corpus_dir}: build it with `dualspeechlm-data build`")
    shutil.copytree(corpus_dir, out)
    card = out / "README.md"
    card.write_text(card.read_text().replace(CARD_DATASET_PATH, repo_id))
    return StagedRepo(repo_id, "dataset", out)


def stage_space(out: Path, repo_id: str, model_id: str, dataset_id: str | None,
                corpus_dir: Path | None = None, samples_dir: Path | None = None) -> StagedRepo:
    shutil.copytree(SPACE_DIR, out, ignore=shutil.ignore_patterns("__init__.py", "__pycache__", "model_id.txt",
                                                                 "examples"))
    (out / "model_id.txt").write_text(model_id + "\n")
    if corpus_dir is not None:
        write_space_examples(corpus_dir, out / "examples", samples_dir=samples_dir)
    card = RepoCard.load(out / "README.md")
    card.data.models = [model_id]
    card.data.datasets = [dataset_id] if dataset_id else None
    card.save(out / "README.md")
    return StagedRepo(repo_id, "space", out)


def stage_all(out: Path, model_dir: Path, repo_id: str, corpus_dir: Path | None, dataset_id: str | None,
              space_id: str | None, samples_dir: Path | None = None) -> list[StagedRepo]:
    """The repo folders under `out` (`model/`, `dataset/`, `space/`); `None` ids skip a repo. The corpus, where there
    is one, also gives the card what the model knows and the Space its examples; the samples page, where there is
    one, a few of its items beside the Space's TTS and VC tabs."""
    out.mkdir(parents=True, exist_ok=True)
    built = corpus_dir if corpus_dir is not None and (corpus_dir / "manifest.json").is_file() else None
    staged = [stage_model(model_dir, out / "model", repo_id, dataset_id, built)]
    if dataset_id:
        staged.append(stage_dataset(corpus_dir, out / "dataset", dataset_id))
    if space_id:
        staged.append(stage_space(out / "space", space_id, repo_id, dataset_id, built,
                                  samples_dir if has_samples_page(samples_dir) else None))
    return staged


def upload(staged: list[StagedRepo], token: str | None = None, endpoint: str | None = None,
           private: bool = False) -> list[str]:
    """Create each repo (or reuse it) and upload its folder in one commit; returns the commit URLs."""
    api = HfApi(endpoint=endpoint, token=token)
    urls = []
    for repo in staged:
        where = f"{repo.repo_type} repo {repo.repo_id} at {api.endpoint}"
        try:
            api.create_repo(repo.repo_id, repo_type=repo.repo_type, private=private, exist_ok=True,
                            space_sdk="gradio" if repo.repo_type == "space" else None)
            commit = api.upload_folder(folder_path=repo.folder, repo_id=repo.repo_id, repo_type=repo.repo_type,
                                       commit_message="Upload with dualspeechlm-push")
        except OfflineModeIsEnabled as error:
            raise PublishError(f"cannot push the {where}: HF_HUB_OFFLINE=1 is set (unset it, or write the "
                               f"folders with --output-dir)") from error
        except HfHubHTTPError as error:
            status = error.response.status_code if error.response is not None else "?"
            hint = (" Log in with `hf auth login`, set HF_TOKEN or pass --token, with write access."
                    if status in (401, 403) else "")
            raise PublishError(f"the Hub refused the {where} (HTTP {status}).{hint} Nothing local was changed."
                               ) from error
        except (httpx2.HTTPError, OSError) as error:
            raise PublishError(f"lost the connection while pushing the {where} ({type(error).__name__}: "
                               f"{error}). Nothing local was changed; rerun the command to finish.") from error
        urls.append(commit.commit_url)
    return urls


def publish(model_dir: str | Path, repo_id: str, corpus_dir: str | Path | None = None, dataset_id: str | None = None,
            space_id: str | None = None, output_dir: str | Path | None = None, token: str | None = None,
            endpoint: str | None = None, private: bool = False,
            samples_dir: str | Path | None = None) -> list[StagedRepo] | list[str]:
    """Stage the repos; then write them to `output_dir` (returns the staged repos) or push them
    (returns the commit URLs)."""
    args = (Path(model_dir), repo_id, Path(corpus_dir) if corpus_dir else None, dataset_id, space_id,
            Path(samples_dir) if samples_dir else None)
    if output_dir is not None:
        return stage_all(Path(output_dir), *args)
    with tempfile.TemporaryDirectory(prefix="dualspeechlm-push-") as staging:
        return upload(stage_all(Path(staging), *args), token=token, endpoint=endpoint, private=private)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo-id", required=True, help="the model repo, e.g. you/dualspeechlm-tiny")
    parser.add_argument("--model", default="models/dualspeechlm", help="the trained model folder")
    parser.add_argument("--corpus", default="data/corpus", help="the corpus folder (dualspeechlm-data build)")
    parser.add_argument("--samples", default="docs/samples",
                        help="the model's samples page (dualspeechlm-samples), shown in the Space where it exists")
    parser.add_argument("--dataset-repo-id", help="default: <repo-id>-corpus")
    parser.add_argument("--space-repo-id", help="default: <repo-id>-demo")
    parser.add_argument("--no-dataset", action="store_true", help="do not publish the corpus")
    parser.add_argument("--no-space", action="store_true", help="do not publish the Space")
    parser.add_argument("--output-dir", help="write the repo folders here instead of pushing")
    parser.add_argument("--token", help="default: HF_TOKEN or the token of `hf auth login`")
    parser.add_argument("--private", action="store_true")
    args = parser.parse_args(argv)
    dataset_id = None if args.no_dataset else args.dataset_repo_id or f"{args.repo_id}-corpus"
    space_id = None if args.no_space else args.space_repo_id or f"{args.repo_id}-demo"
    try:
        done = publish(args.model, args.repo_id, args.corpus, dataset_id, space_id, args.output_dir, args.token,
                       private=args.private, samples_dir=args.samples)
    except (PublishError, FileNotFoundError) as error:
        raise SystemExit(f"dualspeechlm-push: {error}") from error
    for line in ([f"{r.repo_type}: {r.folder}" for r in done] if args.output_dir else done):
        print(line)


if __name__ == "__main__":
    main()
