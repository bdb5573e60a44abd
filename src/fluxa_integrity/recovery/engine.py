"""The recovery engine: the one path from a recipe's plan to a verified, recorded, reversible
change of the live database, whichever face (CLI, API, scheduler, drill) drives it.

    plan = make_plan(ctx, "correct-by-policy", {"collection": "users"})   # builds + saves
    dry = dry_run(db, plan)                                                # counts, samples, conflicts
    res = apply_plan(db, store, incidents, plan.id, incident_id=12)       # journaled, resumable
    ver = verify_plan(db, store, incidents, policy, plan.id)              # the rules run again
    und = undo_plan(db, store, incidents, plan.id, incident_id=12)        # exact before-images

Each step lives in its own module (plans_store, dryrun, apply, verify, undo; the safety rules
are in their docstrings and docs/recovery.md); this module builds a plan from a registered
recipe's parameters and re-exports the steps. Failure behaviour: a missing required parameter or
a value of the wrong type is a FluxaError naming the ``--option`` before the recipe runs.
"""

from __future__ import annotations

from datetime import datetime, timezone

from ..errors import FluxaError
from ..store import Store
from .apply import ApplyResult, apply_plan  # noqa: F401
from .dryrun import DryRun, dry_run  # noqa: F401
from .model import ON_CONFLICT, Param, Plan, RecipeContext
from .plans_store import list_rows, load, save
from .registry import recipe
from .undo import UndoResult, undo_plan  # noqa: F401
from .verify import VerifyResult, verify_plan  # noqa: F401

UTC = timezone.utc


def _coerce(p: Param, value):
    if value is None:
        return [] if p.multiple else None
    if p.multiple:
        items = value if isinstance(value, (list, tuple)) else [value]
        return [_coerce_one(p, v) for v in items]
    return _coerce_one(p, value)


def _coerce_one(p: Param, v):
    try:
        if p.type is datetime:
            if isinstance(v, datetime):
                return v if v.tzinfo else v.replace(tzinfo=UTC)
            d = datetime.fromisoformat(str(v).replace("Z", "+00:00"))
            return d if d.tzinfo else d.replace(tzinfo=UTC)
        if p.type is bool and isinstance(v, str):
            if v.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(v)
            return v.lower() in ("true", "1", "yes")
        return v if isinstance(v, p.type) else p.type(v)
    except (TypeError, ValueError):
        raise FluxaError(f"--{p.name} {v!r} is not a {p.type.__name__}",
                         "dates are ISO-8601, e.g. 2026-11-25T21:40:00Z" if p.type is datetime else None) from None


def recipe_params(name: str, given: dict) -> dict:
    """``given`` (kebab- or snake-case keys) checked and typed against the recipe's Params;
    snake-case keys, defaults filled in."""
    spec = recipe(name)
    known = {p.name.replace("-", "_"): p for p in spec.params}
    norm = {k.replace("-", "_"): v for k, v in (given or {}).items()}
    unknown = sorted(set(norm) - set(known))
    if unknown:
        raise FluxaError(f"recipe {name} has no parameter --{unknown[0].replace('_', '-')}",
                         "its parameters: " + (", ".join(f"--{p.name}" for p in spec.params) or "(none)"))
    out = {}
    for key, p in known.items():
        v = norm.get(key)
        if v is None or (p.multiple and not v):
            if p.required:
                raise FluxaError(f"recipe {name} needs --{p.name}", p.help)
            v = p.default
        out[key] = _coerce(p, v)
    return out


def build_plan(ctx: RecipeContext, recipe_name: str, params: dict) -> Plan:
    """The recipe's plan from ``params``, not saved (a dry run that leaves no plan behind)."""
    typed = recipe_params(recipe_name, params)
    plan = recipe(recipe_name).build(ctx, **typed)
    if not plan.database:
        plan.database = ctx.db.name
    if not plan.params:
        plan.params = typed
    return plan


def make_plan(ctx: RecipeContext, recipe_name: str, params: dict, *, actor: str | None = None,
              on_conflict: str = "refuse") -> Plan:
    """Build the recipe's plan from ``params`` and save it (files + row); ``plan.id`` is set.
    ``on_conflict`` (model.ON_CONFLICT) is kept with the plan: what its apply does with a document
    changed since the plan read it."""
    if on_conflict not in ON_CONFLICT:
        raise FluxaError(f"unknown conflict mode {on_conflict!r}", f"one of: {', '.join(ON_CONFLICT)}")
    plan = build_plan(ctx, recipe_name, params)
    plan.on_conflict = on_conflict
    save(ctx.store, plan, actor=actor)
    return plan


def load_plan(store: Store, plan_id: str) -> Plan:
    """The saved plan (its changes file checked against its sha256)."""
    return load(store, plan_id).plan


def list_plans(store: Store, database: str | None = None, limit: int = 100) -> list[dict]:
    """Newest first: id, recipe, database, status, counts, incident, timestamps, last results."""
    return list_rows(store, database, limit)
