"""One writer per live database: applying or undoing a plan - `restore promote`/`restore undo`
included, which are plan applies and undos - holds an exclusive lock
(``$FLUXA_HOME/undo/.<live_db>.lock``, the holder-naming flock of locks.py; the path promotions
always used, so an older process still running is excluded too).

Failure behaviour: a second writer is refused with a FluxaError naming the holder (pid, host,
since, command); the kernel drops the flock of a killed process, so a rerun after kill -9 gets it.
"""

from __future__ import annotations

from ..errors import FluxaError
from ..home import fluxa_home
from ..locks import HolderLock, describe


class PlanLock(HolderLock):
    def __init__(self, live_db: str):
        def busy(holder: dict) -> FluxaError:
            return FluxaError(f"another recovery apply, undo or promotion is writing to {live_db!r}: {describe(holder)}",
                              "wait for it to finish, then rerun this command")

        super().__init__(fluxa_home() / "undo" / f".{live_db}.lock", busy, "check that FLUXA_HOME is writable")
