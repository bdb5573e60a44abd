"""An RPO breach is an incident, not only a failed job run (issue 11; S37, S38).

Shape: ``RpoBreach(store, policy, db, log, started_at).judge(rows, now)`` takes the rows of
``backup.objectives.rpo_status`` (what the ``rpo-monitor`` job computes) and:
- opens one ``rpo_breached`` system event for the database when a data class is past its RPO and
  no live incident of that kind exists (one problem, one incident, however many monitor runs see
  it); its places are the breached classes' covers, so its severity is the policy's for them;
- notes on that incident each class that breaches later, once (a class already named in the
  incident's opening or notes is not repeated);
- notes when every class is back within its RPO. It never resolves the incident: a person says
  what was lost and why (phase 5).

Grace, a decision: a class with no recoverable point at all is a breach only once the service
has run for that class's RPO. A service just started before its first scheduled backup is not an
incident; one that ran a whole RPO without producing a point is. A point that aged past its RPO
is a breach at once.

Failure: the incident engine failing (store busy) is logged, never raised: the monitor run's own
outcome is what the job history records, and the next run judges again.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Callable

from ..policy.models import Policy
from ..store import Store

KIND = "rpo_breached"


def breaches(rows: list[dict], uptime_s: float) -> list[dict]:
    """The rows that are an incident now (the grace above)."""
    return [r for r in rows if r["status"] == "breached"
            and (r["age_seconds"] is not None or uptime_s >= r["rpo_seconds"])]


def describe(r: dict) -> str:
    if r["age_seconds"] is None:
        return f"{r['data_class']}: no recoverable point (RPO {r['rpo']})"
    return f"{r['data_class']}: newest recoverable point {r['age_seconds']:.0f}s old (RPO {r['rpo']})"


class RpoBreach:
    def __init__(self, store: Store, policy: Policy, db: str, log: Callable[[str], None] = lambda m: None,
                 started_at: datetime | None = None, api_factory: Callable | None = None):
        self.store, self.policy, self.db, self.log = store, policy, db, log
        self.started_at = started_at or datetime.now(UTC)
        self._api_factory = api_factory

    def _api(self):
        if self._api_factory:
            return self._api_factory()
        from ..comms.notify import load_channels, retry_settings
        from ..home import load_config_file
        from ..incidents.api import Incidents

        cfg = load_config_file()
        return Incidents(self.store, self.policy, load_channels(cfg), retry_settings(cfg))

    def _places(self, names: set[str]) -> list[str]:
        out = set()
        for dc in self.policy.data_classes:
            if dc.name in names:
                for c in dc.covers:
                    out |= {f"{c.collection}.{f}" for f in c.fields} if c.fields else {c.collection}
        return sorted(p for p in out if p.split(".")[0] in self.policy.collections)

    def judge(self, rows: list[dict], now: datetime | None = None) -> dict:
        """``{"opened": id|None, "noted": [classes], "met_again": bool, "incident": id|None}``."""
        now = now or datetime.now(UTC)
        bad = breaches(rows, (now - self.started_at).total_seconds())
        out = {"opened": None, "noted": [], "met_again": False, "incident": None}
        try:
            api = self._api()
            live = next((i for i in api.list("live") if i["source_kind"] == KIND and i["database"] == self.db), None)
            if live is None:
                if bad:
                    inc = api.system_event(KIND, f"RPO breached: {', '.join(r['data_class'] for r in bad)} ({self.db})",
                                           "The rpo-monitor found data past its recovery point objective: "
                                           + "; ".join(describe(r) for r in bad)
                                           + ". Take a backup now (`backup run`) and check the archiver "
                                             "(`backup oplog-status`).",
                                           collections=self._places({r["data_class"] for r in bad}), database=self.db)
                    out["opened"] = out["incident"] = inc["id"]
                    self.log(f"rpo: opened incident {inc['id']} ({', '.join(r['data_class'] for r in bad)})")
                return out
            out["incident"] = live["id"]
            told = _told(api.timeline(live["id"]))
            for r in bad:
                if r["data_class"] not in told:
                    api.note(live["id"], f"RPO breached too: {describe(r)}")
                    out["noted"].append(r["data_class"])
            if not bad and not told.get("__met__"):
                api.note(live["id"], "RPO met again for every data class: " + ", ".join(
                    f"{r['data_class']} {r['age_seconds']:.0f}s" for r in rows if r["age_seconds"] is not None))
                out["met_again"] = True
                self.log(f"rpo: met again; noted on incident {live['id']}")
        except Exception as exc:  # noqa: BLE001 - the monitor run's outcome is recorded anyway
            self.log(f"rpo: the breach could not be recorded as an incident: {exc}")
        return out


def _told(events: list[dict]) -> dict:
    """Classes the incident already names as breached since it was last met again (its opening
    and its notes), and whether the newest word is "met again"."""
    told: dict = {}
    for e in events:
        text = " ".join(str(v) for v in (e.get("data") or {}).values())
        if e.get("kind") == "opened" or "RPO breached too" in text:
            told.update({name: True for name in _class_names(text)})
            told.pop("__met__", None)
        elif "RPO met again" in text:
            told = {"__met__": True}
    return told


def _class_names(text: str) -> list[str]:
    import re

    return re.findall(r"([a-z][a-z0-9_-]*): (?:no recoverable point|newest recoverable point)", text)
