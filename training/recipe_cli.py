"""Command lines for the recipe dataclasses: `--preset tiny|paper` plus one flag per plain field."""

from __future__ import annotations

import argparse
import dataclasses

FLAG_TYPES = {"str": str, "str | None": str, "int": int, "int | None": int, "float": float}


def recipe_parser(recipe_class, description: str) -> argparse.ArgumentParser:
    """A parser with `--preset` and a `--field-name` flag (default None: keep the preset's value) for
    every str / int / float field of `recipe_class`; booleans and collections get their own flags."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--preset", choices=("tiny", "paper"), default="tiny")
    defaults = recipe_class()
    for field in dataclasses.fields(recipe_class):
        if field.type in FLAG_TYPES:
            parser.add_argument(f"--{field.name.replace('_', '-')}", type=FLAG_TYPES[field.type], default=None,
                                help=f"tiny preset: {getattr(defaults, field.name)}")
    return parser


def recipe_from_args(recipe_class, args: dict):
    """The preset named by `args["preset"]` with every non-None flag of `args` (a `vars()` dict) applied."""
    preset = getattr(recipe_class, args.pop("preset"))
    field_names = {field.name for field in dataclasses.fields(recipe_class)}
    return preset(**{name: value for name, value in args.items() if value is not None and name in field_names})


__all__ = ["recipe_parser", "recipe_from_args"]
