"""The playbook's four "Specific Data Integrity Scenarios" as data: what each drill breaks (fault
kinds of fluxa/faults.py and counts, plus the drill's own ``dropped-index``), which recovery
recipes with which parameters bring the data back, which collections its pre-fault copy covers,
and the root cause and lessons its postmortem records.

Recipe parameters depend on what only the running drill knows (its backup, the time of the
faults, the ground-truth manifest), so each step's ``params`` is a function of ``Facts``.
``expect`` names documents whose right final state is not the pre-fault one: a write the
application made on purpose (synchronisation: a user changed after the last sync keeps the
change, and the secondary must follow it).

Failure: none at import; the runner refuses an unknown scenario name (FluxaError, exit 2).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

from ..mongo.by_id import find_by_ids
from ..errors import FluxaError
from ..fluxa import model as m
from ..fluxa.manifest import Manifest

DROPPED_INDEX = "dropped-index"  # the drill's own fault: an index the policy expects, dropped


@dataclass
class Facts:
    """What a step's parameters are made from."""

    db: str  # the drill's scratch database
    backup_id: str  # the full backup taken before the faults
    fault_time: datetime  # when the first fault was injected (UTC, whole seconds)
    before_fault: datetime  # a moment before any fault, after the backup
    manifest: Manifest  # the drill's ground truth
    restored_db: str = ""  # where a step's ``restore`` puts the backup's copy (S25: a separate target)
    found: dict = field(default_factory=dict)  # rule id -> the _ids its findings named (the evidence, not ground truth)

    def ids(self, kind: str, collection: str | None = None) -> list:
        return [i for inj in self.manifest.injections if inj.kind == kind
                and (collection is None or inj.collection == collection) for i in inj.ids]

    @property
    def secondary(self) -> str:
        return m.secondary_db_name(self.db)


@dataclass(frozen=True)
class Fault:
    kind: str
    count: int
    optional: bool = False  # a kind another engineer may not have added yet: noted, not failed


@dataclass(frozen=True)
class Step:
    recipe: str
    params: Callable[[Facts], dict | list[dict]]  # a list: one plan per item (e.g. per conversation)
    why: str  # the playbook's recovery procedure this step is
    restore: tuple[str, ...] = ()  # collections restored from the drill's backup into Facts.restored_db first


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str  # the playbook's heading
    faults: tuple[Fault, ...]
    steps: tuple[Step, ...]
    compare: tuple[str, ...]  # places of the pre-fault copy; "{secondary}" is the secondary database
    root_cause: str
    factors: tuple[str, ...] = ()
    lessons: tuple[str, ...] = ()
    action_items: tuple[str, ...] = ()
    # (facts, db) -> {place: {_id: expected hash or None}}, called right after the faults
    expect: Callable[..., dict[str, dict[Any, str | None]]] | None = None
    contain: tuple[str, ...] = field(default=())  # collections made read-only while recovering

    def places(self, facts_db: str) -> list[str]:
        return [p.replace("{secondary}", m.secondary_db_name(facts_db)) for p in self.compare]


def _sync_expect(facts: Facts, db) -> dict:
    """Users changed after the last sync are application writes: the primary keeps them (their
    state right after the faults) and the secondary must hold the primary's synced fields (the
    policy's sync rule: primary wins). Called right after the faults are injected."""
    from bson.codec_options import CodecOptions
    from bson.raw_bson import RawBSONDocument

    from ..recovery.model import content_hash

    ids = [i for inj in facts.manifest.injections if inj.kind == "sync-drift"
           for i, v in zip(inj.ids, inj.variants or []) if v == "conflicting-lastUpdated"]
    raw = db.get_collection(m.USERS, codec_options=CodecOptions(document_class=RawBSONDocument))
    sec = db.client[facts.secondary][m.USERS]
    primary = {d["_id"]: content_hash(d) for d in find_by_ids(raw, ids)}
    secondary = {}
    for u in find_by_ids(db[m.USERS], ids, {"email": 1, "lastUpdated": 1}):
        was = sec.find_one({"_id": u["_id"]})
        if was is not None:
            secondary[u["_id"]] = content_hash({**was, "email": u["email"], "lastUpdated": u["lastUpdated"]})
    return {m.USERS: primary, f"{facts.secondary}.{m.USERS}": secondary}


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario(
        name="corruption",
        title="Database Corruption",
        faults=(Fault("corrupt-preferences", 6), Fault("wrong-type-createdat", 3), Fault("out-of-range", 3),
                Fault(DROPPED_INDEX, 1)),
        steps=(
            Step("correct-by-policy", lambda f: {"collection": m.USERS},
                 "Repair limited corruption: bring values in line with the policy's field rules"),
            Step("restore-and-promote", lambda f: {"source_db": f.restored_db, "collections": [m.USERS]},
                 "Restore from the last known good backup what the policy cannot derive", restore=(m.USERS,)),
            Step("indexes", lambda f: {"collection": m.USERS}, "Rebuild indexes"),
        ),
        compare=(m.USERS,),
        contain=(m.USERS,),
        root_cause="Drill: user documents corrupted (invalid preferences, wrong types, out-of-range values) "
                   "and the users.email index dropped, injected by `fluxa-integrity drill corruption`.",
        factors=("No validator on users.preferences", "Index changes not reviewed"),
        lessons=("Policy corrections fix what the policy can derive; the backup restores the rest",),
        action_items=("Schedule the schema checks continuously (S39)",),
    ),
    Scenario(
        name="synchronisation",
        title="Data Synchronization Issues",
        faults=(Fault("sync-drift", 6),),
        steps=(Step("sync", lambda f: {"rule": "users.sync"},
                    "Re-run synchronisation with corrected data and reconcile"),),
        compare=(m.USERS, f"{{secondary}}.{m.USERS}"),
        contain=(m.USERS,),
        expect=_sync_expect,
        root_cause="Drill: the secondary system's copy of users drifted (missing, extra and stale records), "
                   "injected by `fluxa-integrity drill synchronisation`.",
        factors=("The sync job does not reconcile deletions",),
        lessons=("The primary wins; a re-run sync closes the drift",),
        action_items=("Alert on a failed or partial sync run",),
    ),
    Scenario(
        name="migration-failure",
        title="Schema Migration Failures",
        faults=(Fault("half-migration", 6),),
        steps=(Step("migrate", lambda f: {"migration": "conversations-v2", "direction": "forward"},
                    "Apply the corrective migration (the policy's declared v2) and validate all affected records"),),
        compare=(m.CONVERSATIONS,),
        contain=(m.CONVERSATIONS,),
        root_cause="Drill: the conversations v2 migration (messageCount) half applied, injected by "
                   "`fluxa-integrity drill migration-failure`.",
        factors=("The migration ran without a completion check",),
        lessons=("A migration declares its transformation so it can be completed or rolled back",),
        action_items=("Run the migration check after every deploy",),
    ),
    Scenario(
        name="data-loss",
        title="Data Loss",
        faults=(Fault("deleted-messages", 5), Fault("soft-deleted-users", 3), Fault("lost-messages", 4)),
        steps=(
            # first: what no audit record explains is rebuilt from the logs (the audited deletions it
            # leaves to undelete, which would otherwise also find the lost ones in the oplog)
            # scoped to the conversations the counter finding names, as a responder would (the
            # whole collection's logs cost one lookup per log entry on a big database), all of
            # them in one plan: one read of the logs, not one per conversation
            Step("reconstruct-from-logs",
                 lambda f: [{"collection": m.MESSAGES, "conversation": convs}
                            for convs in [[str(c) for c in f.found.get(f"{m.CONVERSATIONS}.messageCount", [])]]
                            if convs],
                 "Reconstruct data from logs (the messages lost without an audit record)"),
            Step("undelete", lambda f: {"collection": m.MESSAGES, "since": f.before_fault, "hard": True},
                 "Restore specific data from backups (deletions found in the audit log)"),
            Step("undelete", lambda f: {"collection": m.USERS, "since": f.before_fault, "soft": True},
                 "Recover from soft-deleted records"),
        ),
        compare=(m.USERS, m.CONVERSATIONS, m.MESSAGES),
        contain=(m.USERS, m.CONVERSATIONS, m.MESSAGES),
        root_cause="Drill: messages deleted (with audit records), users soft-deleted and messages lost without "
                   "a trace, injected by `fluxa-integrity drill data-loss`.",
        factors=("A cleanup script deleted live data",),
        lessons=("Audit records and logs are enough to bring chat history back",),
        action_items=("Review who may run cleanup scripts against production",),
    ),
)}

ALIASES = {"sync": "synchronisation", "synchronization": "synchronisation", "migration": "migration-failure",
           "data_loss": "data-loss", "migration_failure": "migration-failure"}


def scenario_names(name: str) -> list[str]:
    """The scenarios ``name`` stands for (``all``: the four, in the playbook's order)."""
    if name == "all":
        return list(SCENARIOS)
    name = ALIASES.get(name, name)
    if name not in SCENARIOS:
        raise FluxaError(f"unknown drill scenario {name!r}",
                         "one of: " + ", ".join(SCENARIOS) + ", or all (the playbook's four scenarios)")
    return [name]
