"""Taking the application user's write roles away during containment, and giving exactly those
back on lift (S18 "read-only mode" where the server has user management).

Shape: ``probe(client)`` -> ``(supported, reason)``: user management needs ``usersInfo``,
``grantRolesToUser`` and ``revokeRolesFromUser`` (``listCommands`` says whether the server has
them; FerretDB 1.24 has none of them). ``revoke_writes(client, user, user_db, database)`` revokes
the roles that let ``user`` write ``database`` - readWrite and dbOwner on it, readWriteAnyDatabase
and root on admin - grants ``read`` on it in exchange (read-only, not locked out) unless the user
keeps a read role there, and returns ``{"user", "db", "revoked": [...], "granted": [...]}``, the
record the incident keeps. ``restore(client, record)`` grants the revoked roles back and revokes
the granted ones: the user ends with exactly the roles it had.

Granularity: MongoDB roles are per database, so this makes the whole database read-only for the
user even when the containment names a few collections (the flags document stays per collection).
Failure: FluxaError naming the user when it does not exist or the server refuses the change
(typically: the tool's own user lacks userAdmin). A revoke that fails half-way grants back what it
had revoked before raising, so a failed contain leaves the user as it was.
"""

from __future__ import annotations

from pymongo.errors import PyMongoError

from ..errors import FluxaError
from ..mongo.connection import first_line

NEEDED = ("usersInfo", "grantRolesToUser", "revokeRolesFromUser")
WRITE_ON_DB = ("readWrite", "dbOwner")
WRITE_ANYWHERE = ("readWriteAnyDatabase", "root")  # held on admin
READ_ON_DB = ("read", "readWrite", "dbOwner")
NOT_SUPPORTED = "not supported by this server"


def probe(client) -> tuple[bool, str]:
    """Whether the server manages users; the reason when it does not."""
    try:
        commands = client.admin.command("listCommands").get("commands", {})
    except PyMongoError as exc:
        return False, f"{NOT_SUPPORTED} (listCommands failed: {first_line(exc)})"
    missing = [c for c in NEEDED if c not in commands]
    if missing:
        return False, f"{NOT_SUPPORTED} (no {', '.join(missing)})"
    return True, ""


def _roles(client, user: str, user_db: str) -> list[dict]:
    try:
        found = client[user_db].command("usersInfo", {"user": user, "db": user_db}).get("users", [])
    except PyMongoError as exc:
        raise FluxaError(f"cannot read the roles of {user}@{user_db}: {first_line(exc)}",
                         "the tool's user needs the viewUser privilege (userAdmin role)") from exc
    if not found:
        raise FluxaError(f"no user {user!r} in database {user_db!r}",
                         "name the application's user with --app-user and its database with --app-user-db")
    return [{"role": r["role"], "db": r["db"]} for r in found[0].get("roles", [])]


def _change(client, command: str, user: str, user_db: str, roles: list[dict]) -> None:
    if roles:
        client[user_db].command(command, user, roles=roles)


def revoke_writes(client, user: str, user_db: str, database: str) -> dict:
    held = _roles(client, user, user_db)
    revoke = [r for r in held if (r["db"] == database and r["role"] in WRITE_ON_DB)
              or (r["db"] == "admin" and r["role"] in WRITE_ANYWHERE)]
    keeps_read = any(r["db"] == database and r["role"] in READ_ON_DB and r not in revoke for r in held)
    grant = [] if keeps_read or not revoke else [{"role": "read", "db": database}]
    try:
        _change(client, "grantRolesToUser", user, user_db, grant)
        _change(client, "revokeRolesFromUser", user, user_db, revoke)
    except PyMongoError as exc:
        try:  # put the user back as it was: granting a held role or revoking an absent one is a no-op
            _change(client, "grantRolesToUser", user, user_db, revoke)
            _change(client, "revokeRolesFromUser", user, user_db, grant)
        except PyMongoError:
            pass
        raise FluxaError(f"could not revoke the write roles of {user}@{user_db}: {first_line(exc)}",
                         "the tool's user needs the userAdmin role on that database") from exc
    return {"user": user, "db": user_db, "revoked": revoke, "granted": grant}


def restore(client, record: dict) -> dict:
    """Give back exactly what ``revoke_writes`` took (idempotent: a rerun changes nothing)."""
    user, user_db = record["user"], record["db"]
    try:
        _change(client, "grantRolesToUser", user, user_db, list(record.get("revoked") or []))
        _change(client, "revokeRolesFromUser", user, user_db, list(record.get("granted") or []))
    except PyMongoError as exc:
        raise FluxaError(f"could not restore the roles of {user}@{user_db}: {first_line(exc)}",
                         "the roles to give back are kept on the incident: rerun `incident lift` once the "
                         "server accepts it") from exc
    return {"user": user, "db": user_db, "restored": record.get("revoked") or [],
            "removed": record.get("granted") or []}


def revoke_exactly(client, record: dict) -> None:
    """The inverse of ``restore``: the user back to its contained roles (a failed lift's rollback)."""
    user, user_db = record["user"], record["db"]
    try:
        _change(client, "grantRolesToUser", user, user_db, list(record.get("granted") or []))
        _change(client, "revokeRolesFromUser", user, user_db, list(record.get("revoked") or []))
    except PyMongoError as exc:
        raise FluxaError(f"could not revoke the write roles of {user}@{user_db} again: {first_line(exc)}",
                         "the tool's user needs the userAdmin role on that database") from exc
