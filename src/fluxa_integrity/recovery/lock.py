"""One writer per live database: applying or undoing a plan - `restore promote`/`restore undo`
included, which are plan applies and undos - holds an exclusive lock
(``$FLUXA_HOME/undo/.<live_db>.lock``, the holder-naming flock of locks.py; the path promotions
always used, so an older process still running is excluded too). A plan that writes several
databases (a sync plan writes ``<db>_secondary`` too) holds one lock per database it writes,
taken in sorted order so two writers never wait on each other in a cycle (``plan_locks``).

Failure behaviour: a second writer is refused with a FluxaError naming the holder (pid, host,
since, command); the locks already taken are released; the kernel drops the flock of a killed
process, so a rerun after kill -9 gets it.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from typing import Iterable, Iterator

from ..errors import FluxaError
from ..home import fluxa_home
from ..locks import HolderLock, describe


class PlanLock(HolderLock):
    def __init__(self, live_db: str):
        def busy(holder: dict) -> FluxaError:
            return FluxaError(f"another recovery apply, undo or promotion is writing to {live_db!r}: {describe(holder)}",
                              "wait for it to finish, then rerun this command")

        super().__init__(fluxa_home() / "undo" / f".{live_db}.lock", busy, "check that FLUXA_HOME is writable")


def plan_databases(database: str, collections: Iterable[str]) -> list[str]:
    """Every database a plan writes: its own and each ``<db>.<coll>`` change's, sorted."""
    return sorted({database, *(name.split(".", 1)[0] for name in collections if "." in name)})


@contextmanager
def plan_locks(databases: Iterable[str]) -> Iterator[None]:
    """Hold a PlanLock on each database, in sorted order."""
    with ExitStack() as stack:
        for name in sorted(set(databases)):
            stack.enter_context(PlanLock(name))
        yield
