"""Connecting with short timeouts so an unreachable server is an error, not a hang."""

from __future__ import annotations

import pymongo
from pymongo.errors import ConfigurationError, InvalidURI, PyMongoError

from ..errors import FluxaError

SERVER_SELECTION_MS = 5000


def connect(uri: str, *, timeout_ms: int = SERVER_SELECTION_MS, ping: bool = True) -> pymongo.MongoClient:
    """Return a client after checking the server answers ``ping``."""
    try:
        client = pymongo.MongoClient(
            uri,
            serverSelectionTimeoutMS=timeout_ms,
            connectTimeoutMS=timeout_ms,
            tz_aware=True,
        )
    except (InvalidURI, ConfigurationError, ValueError) as exc:
        raise FluxaError(f"invalid MongoDB URI {uri!r}: {exc}", "use mongodb://host:port/") from exc
    if ping:
        try:
            client.admin.command("ping")
        except PyMongoError as exc:
            client.close()
            raise FluxaError(
                f"cannot reach MongoDB at {redact(uri)}: {first_line(exc)}",
                "check the server is running and the URI is right (`fluxa-integrity devdb status`)",
            ) from exc
    return client


def redact(uri: str) -> str:
    """Hide a password in a URI before printing it."""
    if "@" in uri and "://" in uri:
        scheme, rest = uri.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return uri


def first_line(exc: BaseException) -> str:
    return str(exc).split("\n", 1)[0].split(", Timeout:", 1)[0]


def fast_count(db, collection: str) -> int:
    """A cheap document count for progress bars. FerretDB answers `count` with a full scan
    (2.4 s for 100k messages, measured) but `collStats` from its metadata (0.1 s)."""
    try:
        return int(db.command("collStats", collection).get("count", 0))
    except PyMongoError:
        return db[collection].estimated_document_count()
