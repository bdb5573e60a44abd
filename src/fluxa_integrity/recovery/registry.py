"""Looking recipes up by name. Importing the recipes package registers every recipe module
(model.register), so this sits above both and nothing imports upward."""

from __future__ import annotations

from ..errors import FluxaError
from . import recipes as _recipes  # noqa: F401  (registers every recipe)
from .model import _RECIPES, RecipeSpec


def recipes() -> dict[str, RecipeSpec]:
    return dict(_RECIPES)


def recipe(name: str) -> RecipeSpec:
    if name not in _RECIPES:
        raise FluxaError(f"unknown recipe {name!r}",
                         "known recipes: " + (", ".join(sorted(_RECIPES)) or "(none)")
                         + "; list them with `fluxa-integrity recover recipes`")
    return _RECIPES[name]
