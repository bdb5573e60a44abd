"""What a drill leaves in ``$FLUXA_HOME/drills`` (drill/runner.py), read back as a list of runs.

A drill keeps two files per scratch database and scenario: its fault manifest
``<db>-<scenario>.faults.json`` (the ground truth of its latest run, rewritten when it injects)
and, for a run that reached its last phase, the closed incident's postmortem
``<db>-<scenario>-incident-<id>.md``. The report itself (`drill --json`) is printed, not kept.
So a postmortem stands for a run that passed (the runner writes it only after every check came
back clean and every affected document equalled its pre-fault copy), and a manifest newer than
the newest postmortem of its database and scenario for a latest run that stopped before it
(failed or interrupted: the runner's report and the drill incident's timeline say why).

Failure: none; a missing directory is no drill, a manifest that cannot be read has no fault counts (None).
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path

from ..home import fluxa_home
from .scenarios import SCENARIOS

UTC = timezone.utc


def _split(stem: str) -> tuple[str, str] | None:
    """``<db>-<scenario>`` into (db, scenario), the scenario being a known one (names hold dashes)."""
    for name in sorted(SCENARIOS, key=len, reverse=True):
        if stem.endswith("-" + name) and len(stem) > len(name) + 1:
            return stem[: -len(name) - 1], name
    return None


def _mtime(p: Path) -> datetime:
    return datetime.fromtimestamp(p.stat().st_mtime, UTC)


def _faults(p: Path, db: str) -> dict | None:
    """Documents faulted per fault kind, from the manifest."""
    from ..fluxa.manifest import Manifest

    try:
        out: dict[str, int] = {}
        for i in Manifest(p, db).injections:
            out[i.kind] = out.get(i.kind, 0) + len(i.ids)
        return out
    except Exception:  # noqa: BLE001 - a damaged manifest is still listed, without a count
        return None


def kept_drills(home: Path | None = None) -> list[dict]:
    """The drill runs the files show, newest first: scenario, database, time, ok, the incident and
    postmortem of a passed run, the faults injected by a latest run that did not pass."""
    d = (home or fluxa_home()) / "drills"
    if not d.is_dir():
        return []
    rows, newest_pm = [], {}
    for p in d.glob("*-incident-*.md"):
        m = re.fullmatch(r"(.+)-incident-(\d+)\.md", p.name)
        split = _split(m.group(1)) if m else None
        if split is None:
            continue
        at = _mtime(p)
        newest_pm[split] = max(newest_pm.get(split, at), at)
        rows.append({"scenario": split[1], "database": split[0], "at": at, "ok": True, "incident": int(m.group(2)),
                     "postmortem": p.name, "manifest": None, "faults": None})
    for p in d.glob("*.faults.json"):
        split = _split(p.name[: -len(".faults.json")])
        if split is None:
            continue
        at = _mtime(p)
        if split in newest_pm and newest_pm[split] >= at:
            continue  # its run reached the postmortem
        rows.append({"scenario": split[1], "database": split[0], "at": at, "ok": False, "incident": None,
                     "postmortem": None, "manifest": p.name, "faults": _faults(p, split[0])})
    return sorted(rows, key=lambda r: r["at"], reverse=True)
