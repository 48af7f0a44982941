"""Recipe presets and command lines for the recipe dataclasses.

A preset is a YAML file, `presets/<stem>_<name>.yaml`, holding the fields that differ from the
dataclass defaults (`tiny`, `paper`). A command line takes `--preset`, `--config FILE` (a YAML or
JSON file of fields, e.g. the dict-valued ones that have no flag) and one flag per plain field,
applied in that order; `--print-config` prints the resulting recipe as YAML and exits.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import yaml

PRESETS = Path(__file__).parent / "presets"
FLAG_TYPES = {"str": str, "str | None": str, "int": int, "int | None": int, "float": float}


def read_config(recipe_class, path: str | Path) -> dict:
    """The recipe fields in a YAML / JSON file; ValueError on anything that is not a field of `recipe_class`."""
    fields = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(fields, dict):
        raise ValueError(f"{path} must hold a mapping of recipe fields, got {type(fields).__name__}")
    if unknown := sorted(set(fields) - {field.name for field in dataclasses.fields(recipe_class)}):
        raise ValueError(f"{path}: {unknown} are not fields of {recipe_class.__name__}")
    return fields


def preset(recipe_class, name: str, **overrides):
    """`recipe_class` from `presets/<recipe_class.preset_stem>_<name>.yaml`, then `overrides`."""
    path = PRESETS / f"{recipe_class.preset_stem}_{name}.yaml"
    if not path.is_file():
        raise ValueError(f"no preset {name!r} for {recipe_class.__name__} ({path} is missing)")
    return recipe_class(**{**read_config(recipe_class, path), **overrides})


class PresetRecipe:
    """Base of the recipe dataclasses: `tiny()` (2 CPU cores) and `paper()` (the paper's setup) read
    `presets/<preset_stem>_<name>.yaml`, whose comments say what each preset is."""

    preset_stem: str

    @classmethod
    def tiny(cls, **overrides):
        return preset(cls, "tiny", **overrides)

    @classmethod
    def paper(cls, **overrides):
        return preset(cls, "paper", **overrides)


def recipe_parser(recipe_class, description: str) -> argparse.ArgumentParser:
    """A parser with `--preset`, `--config`, `--print-config` and a `--field-name` flag (default None:
    keep the preset's value) for every str / int / float field of `recipe_class`; booleans and
    collections get their own flags or come from `--config`."""
    parser = argparse.ArgumentParser(description=description)
    presets = sorted(path.stem.removeprefix(f"{recipe_class.preset_stem}_")
                     for path in PRESETS.glob(f"{recipe_class.preset_stem}_*.yaml"))
    parser.add_argument("--preset", choices=presets, default="tiny")
    parser.add_argument("--config", type=Path, help="a YAML / JSON file of recipe fields, over the preset")
    parser.add_argument("--print-config", action="store_true", help="print the recipe as YAML and exit")
    defaults = preset(recipe_class, "tiny")
    for field in dataclasses.fields(recipe_class):
        if field.type in FLAG_TYPES:
            parser.add_argument(f"--{field.name.replace('_', '-')}", type=FLAG_TYPES[field.type], default=None,
                                help=f"tiny preset: {getattr(defaults, field.name)}")
    if hasattr(defaults, "use_idle_cores"):
        parser.add_argument("--use-idle-cores", action="store_true", default=None,
                            help="raise the threads to the cores other processes leave idle (IdleCoresCallback)")
    return parser


def recipe_from_args(recipe_class, args: dict):
    """The preset named by `args["preset"]`, then `args["config"]`'s fields, then every non-None flag of
    `args` (a `vars()` dict). With `args["print_config"]` the recipe is printed and the program exits."""
    config = read_config(recipe_class, args.pop("config")) if args.get("config") else {}
    print_config = args.pop("print_config", False)
    field_names = {field.name for field in dataclasses.fields(recipe_class)}
    flags = {name: value for name, value in args.items() if value is not None and name in field_names}
    recipe = preset(recipe_class, args.pop("preset"), **{**config, **flags})
    if print_config:
        print(yaml.safe_dump(dataclasses.asdict(recipe), sort_keys=False), end="")
        raise SystemExit(0)
    return recipe


__all__ = ["PresetRecipe", "preset", "read_config", "recipe_parser", "recipe_from_args"]
