"""One promotion or undo at a time per live database: an exclusive lock on
``$FLUXA_HOME/undo/.<live_db>.lock``, held from the check for unfinished promotions to the last write.

Shape: ``with PromotionLock(live_db):``, the holder-naming lock of ``locks.py`` (as the oplog
archiver's). Two writers into one live database (an undo beside a
live promotion, two reruns of one promotion) could each overwrite what the other saved, so the
second is refused, naming the first.

Failure behaviour: the kernel drops a flock when its process dies (kill -9 included), so a dead
holder never blocks a rerun. A lock file that cannot be opened is a FluxaError before any write.
"""

from __future__ import annotations

from ..errors import FluxaError
from ..home import fluxa_home
from ..locks import HolderLock, describe


class PromotionLock(HolderLock):
    def __init__(self, live_db: str):
        self.live_db = live_db

        def busy(holder: dict) -> FluxaError:
            return FluxaError(f"another promotion or undo is writing to {live_db!r}: {describe(holder)}",
                              "wait for it to finish, then rerun this command")

        super().__init__(fluxa_home() / "undo" / f".{live_db}.lock", busy, "check that FLUXA_HOME is writable")
