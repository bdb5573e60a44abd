"""`restore promote` and `restore undo`: one user of the recovery engine, not a mechanism of its own.

A promotion is a ``restore-and-promote`` recovery plan (recovery/recipes/restore_and_promote.py:
the diff of the restored copy against live - deleted documents inserted, changed ones replaced,
live-only ones left alone) made in ``supersede`` mode and applied at once; the plan id is the
promotion id. Everything else is the engine's (recovery/engine.py, docs/recovery.md):

- on disk: ``$FLUXA_HOME/plans/<promotion-id>/`` - ``changes.bson``, ``plan.json``,
  ``journal/apply-*.bson`` (the live documents before apply wrote them: what undo puts back) and
  ``journal/superseded-*.bson`` (newer app writes set aside) - and a ``recovery_plans`` row;
- supersede: a live document changed since the plan read it (or since an interrupted run wrote
  it) is kept raw, fsynced, in the journal before it is overwritten, and counted ``superseded``
  in the result and on the timeline; undo keeps newer writes the same way, then puts the
  pre-apply documents back;
- one unfinished promotion per live database: rerunning the same command (same restored copy,
  collections and --ids) resumes the unfinished plan made for that selection; any other promotion
  into that database is refused, naming it, until it is finished or undone. The check and the
  writes hold the database's PlanLock (recovery/lock.py): a second writer is refused naming the first;
- the timeline: ``promote`` and ``undo`` recovery actions on the authorising incident
  (``--incident``); the operator's ``--yes`` records nothing. Containment by another incident
  (by any, under --yes) is refused before anything is written.

Promotions made by earlier versions (a ``promotions`` row and an undo store under
``$FLUXA_HOME/undo/<id>/``) are not resumed or undone here: ``restore undo`` names the store and
how to put its documents back, and an unfinished one still blocks a new promotion into its database.

Failure behaviour: a server error mid-way leaves the plan ``failed`` (a killed process leaves it
``applying``), records the run as ``partial`` and raises a FluxaError saying to rerun the same
command; bad input (the copy is live, a missing collection, an incomplete restore, bad --ids, an
unknown or closed incident) is a FluxaError before anything is written.
"""

from __future__ import annotations

from datetime import datetime, timezone

from bson import json_util
from pymongo.database import Database
from sqlalchemy import select

from ..errors import FluxaError
from ..recovery.apply import ApplyResult, Progress, apply_plan, check_writable
from ..recovery.dryrun import DryRun, dry_run
from ..recovery.engine import build_plan, make_plan
from ..recovery.lock import PlanLock
from ..recovery.model import RecipeContext
from ..recovery.plans_store import get_row, list_rows, on_conflict
from ..recovery.undo import UndoResult, undo_plan
from ..store import Store
from ..store.backup_models import Promotion

UTC = timezone.utc
RECIPE = "restore-and-promote"
UNFINISHED = ("applying", "failed", "undoing")


def _params(from_db: str, collections: list[str], ids: list | None) -> dict:
    """The recipe's parameters for this selection (``ids`` as the canonical Extended JSON it saves)."""
    return {"source_db": from_db, "collections": list(collections),
            "ids": None if ids is None else json_util.dumps(ids, json_options=json_util.CANONICAL_JSON_OPTIONS)}


def unfinished_promotions(store: Store, live_db: str) -> list[dict]:
    """Promotions (supersede-mode restore-and-promote plans) into ``live_db`` left applying,
    failed or undoing, oldest first."""
    rows = list_rows(store, live_db, 1000, recipe=RECIPE, statuses=UNFINISHED)
    return [r for r in reversed(rows) if on_conflict(r) == "supersede"]


def _legacy_unfinished(store: Store, live_db: str) -> None:
    with store.session() as s:
        old = s.scalars(select(Promotion).where(Promotion.live_db == live_db,
                                                Promotion.status.in_(UNFINISHED))).first()
        if old is not None:
            raise FluxaError(f"promotion {old.id} into {live_db!r}, made by an earlier version, is unfinished "
                             f"({old.status})", _legacy_hint(old.id, old.undo_dir))


def _legacy_hint(pid: str, undo_dir: str) -> str:
    return (f"finish or undo it with the version that made it; or by hand from its undo store {undo_dir}: "
            "<coll>.overwritten.bson holds the documents it overwrote, raw BSON (`mongorestore --mode upsert "
            "--db DB --collection COLL` puts them back), <coll>.inserted.bson the _ids it inserted (delete them); "
            "then mark it undone in the state store")


def resumable_promotion(store: Store, live_db: str, from_db: str, collections: list[str], ids: list | None) -> str | None:
    """The id of the unfinished promotion this selection resumes, or None. Raises when another
    promotion into ``live_db`` is unfinished: it must be finished or undone first."""
    wanted = _params(from_db, collections, ids)
    for p in unfinished_promotions(store, live_db):
        got = p["params"] or {}
        same = (got.get("source_db"), sorted(got.get("collections") or []), got.get("ids")) == \
            (wanted["source_db"], sorted(wanted["collections"]), wanted["ids"])
        if same and p["status"] != "undoing":
            return p["id"]
        finish = (f"rerun `fluxa-integrity restore undo {p['id']}`" if p["status"] == "undoing" else
                  f"rerun it (restore promote --from-db {got.get('source_db')} --collections "
                  f"{','.join(got.get('collections') or [])}" + (" --ids ..." if got.get("ids") else "")
                  + f" --apply) or undo it (`restore undo {p['id']}`)")
        raise FluxaError(f"promotion {p['id']} into {live_db!r} is unfinished ({p['status']})", f"finish it first: {finish}")
    _legacy_unfinished(store, live_db)
    return None


def preview(store: Store, live: Database, from_db: str, collections: list[str], ids: list | None, policy,
            samples: int = 3) -> tuple[DryRun, str | None]:
    """The dry run of promoting this selection now (the plan is built, not saved) and the
    unfinished promotion ``--apply`` would resume instead, if any."""
    ctx = RecipeContext(db=live, policy=policy, store=store, now=datetime.now(UTC))
    resumes = resumable_promotion(store, live.name, from_db, collections, ids)
    plan = build_plan(ctx, RECIPE, _params(from_db, collections, ids))
    return dry_run(live, plan, samples=samples), resumes


def promote(store: Store, incidents, live: Database, from_db: str, collections: list[str], ids: list | None, policy,
            *, incident_id: int | None = None, actor: str | None = None, batch_size: int = 200,
            progress: Progress | None = None) -> ApplyResult:
    """Make the promotion's plan and apply it (or resume the unfinished one made for this
    selection). ``incident_id`` None means the face has the operator's explicit confirmation."""
    ctx = RecipeContext(db=live, policy=policy, store=store, now=datetime.now(UTC))
    with PlanLock(live.name):  # from the check for unfinished promotions to the last write
        pid = resumable_promotion(store, live.name, from_db, collections, ids)
        if pid is None:
            check_writable(incidents, live.name, collections, incident_id)  # contained: no plan made either
            pid = make_plan(ctx, RECIPE, _params(from_db, collections, ids), actor=actor, on_conflict="supersede").id
        return apply_plan(live, store, incidents, pid, incident_id, actor=actor, confirmed=True, action="promote",
                          hold_lock=False, batch_size=batch_size, progress=progress)


def undo_promotion(store: Store, incidents, client, promotion_id: str, *, incident_id: int | None = None,
                   actor: str | None = None, progress: Progress | None = None) -> UndoResult:
    """Put back what the promotion wrote (the engine's undo of its plan); resumable."""
    try:
        row = get_row(store, promotion_id)
    except FluxaError:
        with store.session() as s:
            old = s.get(Promotion, promotion_id)
            if old is not None:
                raise FluxaError(f"promotion {promotion_id} was made by an earlier version of fluxa-integrity, "
                                 "with an undo store this version does not read",
                                 _legacy_hint(promotion_id, old.undo_dir)) from None
        raise FluxaError(f"no promotion {promotion_id!r}", "the id is printed by `restore promote --apply` "
                         "(`fluxa-integrity recover list` lists them)") from None
    if row["recipe"] != RECIPE:
        raise FluxaError(f"{promotion_id} is a {row['recipe']} recovery plan, not a promotion",
                         f"undo it with `fluxa-integrity recover undo {promotion_id}`")
    return undo_plan(client[row["database"]], store, incidents, promotion_id, incident_id=incident_id,
                     actor=actor, progress=progress, action="undo")
