"""`jobs run-now` without a running ``serve``: the job runs in the calling process.

Same runner, same lease, same history as the service (one implementation): the lease is taken
and renewed every ``lease_ttl / 3`` while the job runs, so a ``serve`` starting meanwhile does
not run it too; a continuous job (the archiver) runs once through what the oplog holds.
Failure: the run's failure is its recorded outcome (returned), never raised.
"""

from __future__ import annotations

import threading
from typing import Callable

from . import leases
from .jobs import JobDef
from .runner import Runner
from .tasks import TaskContext


def run_here(ctx: TaskContext, jobs: list[JobDef], name: str, lease_ttl: float = 30.0,
             log: Callable[[str, str], None] = lambda level, msg: None) -> int:
    holder = leases.new_holder()
    runner = Runner(ctx, jobs, holder, lease_ttl=lease_ttl, log=log)
    done = threading.Event()

    def keep() -> None:
        while not done.wait(lease_ttl / 3):
            try:
                leases.renew(ctx.store, holder, lease_ttl)
            except Exception:  # noqa: BLE001 - the next beat retries
                pass

    keeper = threading.Thread(target=keep, daemon=True)
    keeper.start()
    try:
        return runner.run_manual(name)
    finally:
        done.set()
