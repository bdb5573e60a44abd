"""Opening the store: engine, Alembic upgrade to head, sessions."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from ..home import fluxa_home, load_config_file
from ..errors import FluxaError

MIGRATIONS = Path(__file__).parent / "migrations"


def state_url() -> str:
    url = os.environ.get("FLUXA_STATE_URL") or load_config_file().get("state_url")
    return url or f"sqlite:///{fluxa_home() / 'state.db'}"


class Store:
    def __init__(self, url: str):
        self.url = url
        try:
            self.engine: Engine = create_engine(url, future=True)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise FluxaError(f"invalid state store URL {url!r}: {exc}",
                             "use sqlite:///path/state.db or postgresql+psycopg2://user@host/db") from exc
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def upgrade(self) -> None:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        try:
            with self.engine.begin() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "heads")  # each feature area has its own migration branch
        except SQLAlchemyError as exc:
            raise FluxaError(f"cannot open the state store {self.engine.url!r}: {str(exc).splitlines()[0]}",
                             "check FLUXA_STATE_URL / state_url and that the database server is up") from exc

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: everything in it is written, or nothing is."""
        with self._sessions() as s:
            with s.begin():
                yield s

    def dispose(self) -> None:
        self.engine.dispose()


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.close()


def open_store(url: str | None = None) -> Store:
    store = Store(url or state_url())
    store.upgrade()
    return store
