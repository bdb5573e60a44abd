""""Database unreachable": a job that cannot reach the application's server raises it once.

Shape: ``is_unreachable(exc)`` looks through the exception chain for pymongo's connection
failures (server selection timeout, refused or dropped connection; FluxaErrors raised by the
domain keep the pymongo error as their cause). ``Outage.failed`` opens a ``database_unreachable``
system event through the incident engine (incidents/api.py) when no live incident of that kind
exists for the database, so an outage is one incident however many jobs fail during it;
``Outage.recovered`` notes on that incident when a job reaches the server again.

Failure: the incident engine failing (its store down) is logged, never raised: the job's own
failure is what the history records.
"""

from __future__ import annotations

import threading
from typing import Callable

from pymongo.errors import ConnectionFailure

from ..policy.models import Policy
from ..store import Store

KIND = "database_unreachable"


def is_unreachable(exc: BaseException | None) -> bool:
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, ConnectionFailure):
            return True
        if "cannot reach MongoDB" in str(exc):  # connection.connect()'s own wording (ping failed)
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


class Outage:
    def __init__(self, store: Store, policy: Policy, db: str, log: Callable[[str], None]):
        self.store, self.policy, self.db, self.log = store, policy, db, log
        self.down = False
        self._lock = threading.Lock()

    def _api(self):
        from ..comms.notify import load_channels, retry_settings
        from ..home import load_config_file
        from ..incidents.api import Incidents

        cfg = load_config_file()
        return Incidents(self.store, self.policy, load_channels(cfg), retry_settings(cfg))

    def _live_incident(self, api) -> int | None:
        return next((i["id"] for i in api.list("live") if i["source_kind"] == KIND and i["database"] == self.db), None)

    def failed(self, job: str, error: str) -> int | None:
        """Record the outage; the incident's id (opened now or already open)."""
        with self._lock:
            self.down = True
            try:
                api = self._api()
                found = self._live_incident(api)
                if found is not None:
                    return found
                inc = api.system_event(KIND, f"Database unreachable: {self.db}",
                                       f"The service's job {job} could not reach the application database: {error}",
                                       database=self.db)
                self.log(f"database unreachable: opened incident {inc['id']}")
                return inc["id"]
            except Exception as exc:  # noqa: BLE001 - the job's failure is recorded anyway
                self.log(f"database unreachable, and the incident could not be opened: {exc}")
                return None

    def recovered(self, job: str) -> None:
        with self._lock:
            if not self.down:
                return
            self.down = False
            try:
                api = self._api()
                found = self._live_incident(api)
                if found is not None:
                    api.note(found, f"the service's job {job} reached the database again")
                self.log(f"database reachable again ({job})")
            except Exception as exc:  # noqa: BLE001
                self.log(f"database reachable again; noting it on the incident failed: {exc}")
