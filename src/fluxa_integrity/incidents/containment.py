"""Containment that contains (S18) and its lifting in phase 5 (S22), for ``Incidents``.

``contain(id, db, read_only=True, collections=[...], pause=[...], app_user=...)`` and
``lift(id, db, read_only=..., features=[...])`` change the incident, put a ``contained`` /
``lifted`` row on its timeline and enforce it three ways:

1. the flags document the application reads (containment_reader.py holds the contract and the
   app-side reader): ``fluxa_integrity.containment`` on the application's server, one document
   per application database, rewritten whole from the state store on every contain and lift:
   ``{_id: db, read_only_collections, paused_features, incidents, updated_at, version}``;
2. the tool's own writers: ``check_writable(database, collections, incident_id)`` raises a
   FluxaError naming the containing incident; recovery apply, restore promote and undo call it
   before writing. Recovery under the containing incident itself is allowed: that is the point;
3. the application user's write roles (app_roles.py), revoked on contain with ``app_user`` and
   given back exactly on lift, where the server manages users; elsewhere the timeline says
   "not supported by this server" and the flags document is the enforcement.

State: ``Incident.read_only`` / ``paused_features`` as before, plus ``Incident.containment``
``{"database", "read_only_collections" (["*"]: every collection), "app_user": {...}}``. What is
contained is the union over incidents that are not closed. An incident read-only from before
containment was enforced (no ``read_only_collections``) contains its collections, or every
collection when it names none, on its database (every database when it names none).

Failure behaviour: one transaction per contain or lift. The incident is changed and flushed, the
roles are changed, then the flags document is written from the flushed state, then the state
commits. A refused role change or flags write raises FluxaError and nothing is recorded (a role
change already made is undone first: a failed contain gives the revoked roles back, a failed lift
revokes the roles it gave back, so the application stays contained as the record says). The
only gap is a state commit that fails after the flags write: the flags run ahead of the record
until the next contain, lift or ``sync_flags`` (which rewrites the document from the record). Closing an incident whose containment is enforced is
refused until it is lifted, so a closed incident never leaves the application read-only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Callable

from pymongo.errors import PyMongoError
from sqlalchemy import select
from sqlalchemy.orm import Session, object_session

from ..containment_reader import EVERY_COLLECTION, FLAGS_COLLECTION, FLAGS_DB, VERSION
from ..errors import FluxaError
from ..mongo.connection import first_line
from ..store.incident_models import Incident
from . import app_roles
from .actions import ActionContext, register_action
from .lifecycle import LIVE


# -- the state of one incident ---------------------------------------------------------------

def database_of(inc: Incident) -> str | None:
    return (inc.containment or {}).get("database") or inc.database


def read_only_of(inc: Incident) -> list[str]:
    """The collections this incident holds read-only (``["*"]``: all of its database)."""
    if not inc.read_only:
        return []
    named = (inc.containment or {}).get("read_only_collections")
    return list(named or inc.collections or [EVERY_COLLECTION])


def is_contained(inc: Incident) -> bool:
    return bool(read_only_of(inc) or inc.paused_features)


def enforced(inc: Incident) -> bool:
    """True when a flags document names this incident (it was contained with a database)."""
    return is_contained(inc) and bool((inc.containment or {}).get("database"))


def _containing(s: Session, database: str | None) -> list[Incident]:
    """Incidents that are not closed and contain something on ``database`` (None: any)."""
    rows = s.scalars(select(Incident).where(Incident.status != "closed").order_by(Incident.id)).all()
    return [i for i in rows if is_contained(i) and (database is None or database_of(i) in (database, None))]


def flags_for(s: Session, database: str, at: datetime) -> dict:
    """The flags document of ``database`` as the state store has it now."""
    incs = _containing(s, database)
    return {"_id": database, "version": VERSION,
            "read_only_collections": sorted({c for i in incs for c in read_only_of(i)}),
            "paused_features": sorted({f for i in incs for f in i.paused_features or []}),
            "incidents": [i.id for i in incs], "updated_at": at}


def write_flags(s: Session, client, database: str, at: datetime) -> dict:
    s.flush()
    doc = flags_for(s, database, at)
    try:
        client[FLAGS_DB][FLAGS_COLLECTION].replace_one({"_id": database}, doc, upsert=True)
    except PyMongoError as exc:
        raise FluxaError(f"could not write the containment flags of {database!r} "
                         f"({FLAGS_DB}.{FLAGS_COLLECTION}): {first_line(exc)}",
                         "the tool's user needs readWrite on the fluxa_integrity database; nothing was recorded, "
                         "run the command again once the server accepts it") from exc
    return doc


def _names(values) -> list[str]:
    return sorted({str(v).strip() for v in values or [] if str(v).strip()})


# -- the changes, inside the caller's transaction ----------------------------------------------

def apply_contain(s: Session, inc: Incident, db, policy, read_only: bool, collections: list[str] | None,
                  pause: list[str], app_user: str | None, app_user_db: str | None, at: datetime) -> dict:
    """Change ``inc`` (locked, in ``s``) and enforce; returns the timeline row's data. ``db`` is
    the application's pymongo Database, or None: then only the state store records it."""
    if inc.status not in LIVE:
        raise FluxaError(f"incident {inc.id} is {inc.status}: containment belongs to a live incident",
                         "open a new incident, or reopen this one with `fluxa-integrity incident status "
                         f"{inc.id} investigating`" if inc.status == "resolved" else "open a new incident")
    pause = _names(pause)
    if db is None and (inc.containment or {}).get("database"):
        raise FluxaError(f"incident {inc.id}'s containment is in the flags document of "
                         f"{inc.containment['database']!r}: changing it needs that server", "pass --uri/--db")
    if not read_only and not pause:
        raise FluxaError("nothing to contain", "pass --read-only [--collections a,b] and/or --pause FEATURE")
    if (collections or app_user) and not read_only:
        raise FluxaError("--collections and --app-user go with --read-only")
    database = _database(inc, db)
    state = dict(inc.containment or {})
    data: dict = {"database": database}
    if read_only:
        wanted = _names(collections) or _names(inc.collections)
        if not wanted:
            raise FluxaError(f"incident {inc.id} names no collections to make read-only",
                             "pass --collections a,b (or '*' for every collection of the database)")
        _known(policy, db, wanted)
        before = read_only_of(inc)
        state["read_only_collections"] = sorted(set(before) | set(wanted))
        inc.read_only = True
        data["read_only"] = sorted(set(wanted) - set(before))
        data["read_only_collections"] = state["read_only_collections"]
    if pause:
        data["paused"] = sorted(set(pause) - set(inc.paused_features or []))
        inc.paused_features = sorted(set(inc.paused_features or []) | set(pause))
        data["paused_features"] = inc.paused_features
    revoked = None
    if app_user:
        if db is None:
            raise FluxaError("--app-user needs the application's server", "pass --uri/--db")
        supported, why = app_roles.probe(db.client)
        if not supported:
            data["user_management"] = why
        elif state.get("app_user"):
            data["user_management"] = f"write roles of {state['app_user']['user']} already revoked"
        else:
            revoked = app_roles.revoke_writes(db.client, app_user, app_user_db or "admin", database)
            state["app_user"] = revoked
            data["user_management"] = "revoked"
            data["app_user"] = revoked
    state["database"] = database if db is not None else state.get("database")
    inc.containment = state
    if db is not None:
        try:
            write_flags(s, db.client, database, at)
        except FluxaError:
            if revoked is not None:
                app_roles.restore(db.client, revoked)
            raise
        data["flags"] = f"{FLAGS_DB}.{FLAGS_COLLECTION}"
    else:
        data["flags"] = "not written: no application server named"
    return data


def apply_lift(s: Session, inc: Incident, db, read_only: bool, features: list[str], at: datetime) -> dict:
    if inc.status == "closed":
        raise FluxaError(f"incident {inc.id} is closed; its record is final")
    features = _names(features)
    current_ro, current_paused = read_only_of(inc), list(inc.paused_features or [])
    if not current_ro and not current_paused:
        raise FluxaError(f"incident {inc.id} has nothing contained to lift",
                         f"see what it contains: `fluxa-integrity incident show {inc.id}`")
    everything = not read_only and not features
    if read_only and not current_ro:
        raise FluxaError(f"incident {inc.id} is not read-only", f"it pauses {', '.join(current_paused)}: "
                         "lift those with --feature")
    unknown = [f for f in features if f not in current_paused]
    if unknown:
        raise FluxaError(f"incident {inc.id} does not pause {', '.join(unknown)}",
                         f"it pauses: {', '.join(current_paused) or 'nothing'}")
    state = dict(inc.containment or {})
    if db is None and state.get("database"):
        raise FluxaError(f"incident {inc.id}'s containment is in the flags document of {state['database']!r}: "
                         "lifting it needs that server", f"`fluxa-integrity incident lift {inc.id} --uri ... --db ...`")
    database = _database(inc, db)
    data: dict = {"database": database}
    given_back = None
    if (read_only or everything) and current_ro:
        record = state.get("app_user")
        if record:
            try:
                data["app_user"] = app_roles.restore(db.client, record)
            except FluxaError as exc:
                _revoke_again(db.client, record, exc)  # a half-done restore must not leave the app writing
                raise
            given_back = record
            data["user_management"] = "restored"
            state.pop("app_user")
        data["read_only_lifted"] = current_ro
        inc.read_only = False
        state["read_only_collections"] = []
    lifted = current_paused if everything else features
    if lifted:
        inc.paused_features = [f for f in current_paused if f not in lifted]
        data["resumed"] = lifted
    inc.containment = state
    data["still_contained"] = {"read_only_collections": read_only_of(inc), "paused_features": inc.paused_features}
    if db is not None:
        try:
            write_flags(s, db.client, database, at)
        except FluxaError as exc:
            if given_back is not None:  # as contain does: the roles go back to what the record says
                _revoke_again(db.client, given_back, exc)
            raise
        data["flags"] = f"{FLAGS_DB}.{FLAGS_COLLECTION}"
    else:
        data["flags"] = "not written: no application server named"
    return data


def _revoke_again(client, record: dict, cause: FluxaError) -> None:
    """Undo a (possibly partial) ``app_roles.restore`` of ``record``: the user goes back to the
    contained roles the incident still records. If even that fails the app user may write while
    the record says read-only: say so, with what to do."""
    try:
        app_roles.revoke_exactly(client, record)
    except FluxaError as again:
        raise FluxaError(f"{cause.message}; the write roles of {record['user']}@{record['db']} were given back and "
                         f"could not be revoked again ({again.message}): the application may write while the "
                         "incident still records it read-only",
                         "fix the server's refusal and rerun `incident lift` (or revoke the roles by hand)") from again


def _database(inc: Incident, db) -> str | None:
    """The application database the containment is on: the incident's (set from ``db`` when it
    names none yet). A different ``db`` is refused: the flags would go to the wrong document."""
    known = database_of(inc)
    if db is None:
        return known
    if known is not None and known != db.name:
        raise FluxaError(f"incident {inc.id} is on database {known!r}, not {db.name!r}", f"pass --db {known}")
    inc.database = inc.database or db.name
    return db.name


def _known(policy, db, names: list[str]) -> None:
    asked = [n for n in names if n != EVERY_COLLECTION]
    if not asked:
        return
    known = set(policy.collections)
    if db is not None and any(n not in known for n in asked):
        try:
            known |= set(db.list_collection_names())
        except PyMongoError as exc:
            raise FluxaError(f"cannot list the collections of {db.name!r}: {first_line(exc)}",
                             "check the server (--uri) and run the command again") from exc
    unknown = [n for n in asked if n not in known]
    if unknown:
        raise FluxaError(f"unknown collection(s) {', '.join(unknown)}",
                         "name collections of the policy or of the database, or '*' for all of them")


# -- the facade's methods ----------------------------------------------------------------------

class ContainmentMixin:
    """``Incidents`` supplies ``store``, ``policy``, ``_change``, ``_record``, ``_notify``, ``get``."""

    def contain(self, incident_id: int, db, read_only: bool = False, collections: list[str] | None = None,
                pause: list[str] | None = None, app_user: str | None = None, app_user_db: str | None = None,
                at: datetime | None = None, actor: str | None = None) -> dict:
        """Make collections read-only and/or pause features, enforced (module docstring); the
        incident dict with ``containment_result`` (the timeline row's data)."""
        with self._change(incident_id, at, actor) as ch:
            data = apply_contain(ch.s, ch.inc, db, self.policy, read_only, collections, list(pause or []),
                                 app_user, app_user_db, ch.at)
            self._record(ch, "contained", **data)
            self._notify(ch, "containment", _contain_text(data))
        return {**self.get(incident_id), "containment_result": data}

    def lift(self, incident_id: int, db, read_only: bool = False, features: list[str] | None = None,
             at: datetime | None = None, actor: str | None = None) -> dict:
        """Lift read-only mode and/or resume features (everything when neither is named)."""
        with self._change(incident_id, at, actor) as ch:
            data = apply_lift(ch.s, ch.inc, db, read_only, list(features or []), ch.at)
            self._record(ch, "lifted", **data)
            self._notify(ch, "containment", _lift_text(data))
        return {**self.get(incident_id), "containment_result": data}

    def check_writable(self, database: str, collections: list[str], incident_id: int | None = None) -> None:
        """Raise FluxaError when one of ``collections`` of ``database`` is read-only under a
        live incident other than ``incident_id``. A name "<otherdb>.<coll>" is checked in
        ``otherdb`` too (and as a plain name in ``database``: refusing more, never less)."""
        wanted: list[tuple[str, str]] = []
        for c in collections:
            wanted.append((database, c))
            if "." in c:
                other, rest = c.split(".", 1)
                wanted.append((other, rest))
        with self.store.session() as s:
            for inc in _containing(s, None):
                if incident_id is not None and inc.id == int(incident_id):
                    continue
                held = read_only_of(inc)
                where = database_of(inc)
                for dbname, coll in wanted:
                    if where in (dbname, None) and (coll in held or EVERY_COLLECTION in held):
                        raise FluxaError(
                            f"{dbname}.{coll} is read-only: incident {inc.id} ({inc.title}) contains it",
                            f"recover under that incident (--incident {inc.id}), or lift its containment first: "
                            f"`fluxa-integrity incident lift {inc.id} --read-only`")

    def containment(self, database: str | None = None) -> dict:
        """What is contained per database, from the state store (the flags documents' source)."""
        with self.store.session() as s:
            out: dict = {}
            for inc in _containing(s, database):
                key = database_of(inc) or "*"
                row = out.setdefault(key, {"read_only_collections": set(), "paused_features": set(), "incidents": []})
                row["read_only_collections"] |= set(read_only_of(inc))
                row["paused_features"] |= set(inc.paused_features or [])
                row["incidents"].append({"id": inc.id, "title": inc.title, "status": inc.status,
                                         "read_only_collections": read_only_of(inc),
                                         "paused_features": list(inc.paused_features or []),
                                         "app_user": (inc.containment or {}).get("app_user")})
            return {k: {**v, "read_only_collections": sorted(v["read_only_collections"]),
                        "paused_features": sorted(v["paused_features"])} for k, v in out.items()}

    def flags(self, db) -> dict | None:
        """The flags document of ``db`` as the application reads it (None: never written)."""
        try:
            return db.client[FLAGS_DB][FLAGS_COLLECTION].find_one({"_id": db.name})
        except PyMongoError as exc:
            raise FluxaError(f"cannot read the containment flags: {first_line(exc)}", "check the server") from exc

    def sync_flags(self, db, at: datetime | None = None) -> dict:
        """Rewrite the flags document of ``db`` from the state store (after a failed commit, a
        merge, or to check that they agree)."""
        from .timeutil import now

        with self.store.session() as s:
            return write_flags(s, db.client, db.name, at or now())


def _contain_text(d: dict) -> str:
    parts = []
    if d.get("read_only") is not None:
        parts.append(f"read-only {', '.join(d['read_only_collections'])}")
    if d.get("paused") is not None:
        parts.append(f"paused {', '.join(d['paused_features'])}")
    if d.get("user_management"):
        parts.append(f"application user: {d['user_management']}")
    return f"contained on {d.get('database') or '-'}: " + "; ".join(parts)


def _lift_text(d: dict) -> str:
    parts = []
    if d.get("read_only_lifted"):
        parts.append(f"writes allowed again on {', '.join(d['read_only_lifted'])}")
    if d.get("resumed"):
        parts.append(f"resumed {', '.join(d['resumed'])}")
    return f"lifted on {d.get('database') or '-'}: " + "; ".join(parts)


# -- the phase checklists' actions (read_only_mode, pause_features, lift_read_only, resume_features)

def _client_for(ctx: ActionContext):
    """The application database for a checklist action: ``--param uri=/db=``, else the incident's
    database through the usual resolution. None when no server is configured: the action then
    records the containment (the tool's writers honour it) and says the flags were not written."""
    from ..config import resolve_target
    from ..mongo.connection import connect

    try:
        target = resolve_target(ctx.params.get("uri"), ctx.params.get("db") or database_of(ctx.incident))
    except FluxaError:
        if ctx.params.get("uri"):
            raise
        return None
    return connect(target.uri)[target.db]


def _action(run) -> Callable[[ActionContext], dict]:
    def handler(ctx: ActionContext) -> dict:
        s = object_session(ctx.incident)
        data = run(ctx, s, _client_for(ctx))
        message = "" if data.get("flags", "").startswith(FLAGS_DB) else (
            "recorded (the tool's own writers honour it) but the application's flags document was not written: "
            f"`fluxa-integrity incident contain {ctx.incident.id} --uri ...` enforces it")
        return {"status": "done", **data, **({"message": message} if message else {})}
    return handler


def _read_only(ctx, s, db):
    cols = [c for c in str(ctx.params.get("collections", "")).split(",") if c.strip()]
    return apply_contain(s, ctx.incident, db, ctx.policy, True, cols or None, [], ctx.params.get("app_user"),
                         ctx.params.get("app_user_db"), ctx.at)


def _pause(ctx, s, db):
    features = [f for f in str(ctx.params.get("features", "")).split(",") if f.strip()]
    if not features:
        raise FluxaError("pause_features needs the features to pause", "pass --param features=chat,export")
    return apply_contain(s, ctx.incident, db, ctx.policy, False, None, features, None, None, ctx.at)


def _lift_read_only(ctx, s, db):
    return apply_lift(s, ctx.incident, db, True, [], ctx.at)


def _resume(ctx, s, db):
    paused = list(ctx.incident.paused_features or [])
    if not paused:
        raise FluxaError(f"incident {ctx.incident.id} pauses no feature", "tick the item with --done")
    return apply_lift(s, ctx.incident, db, False, paused, ctx.at)


register_action("read_only_mode", _action(_read_only))
register_action("pause_features", _action(_pause))
register_action("lift_read_only", _action(_lift_read_only))
register_action("resume_features", _action(_resume))
