"""The drill report: one scenario's numbers, and the sum of several (``drill all``).

Shape: ``scenario_dict(result)`` is the JSON a face prints for one scenario (phases with their
seconds, faults with how many were detected, the recipe steps, time to detect and to recover,
documents lost, RTO and RPO achieved against the policy's targets, checks left, the comparison
with the pre-fault copy, the differing ids); ``summary(results)`` adds the verdict over all.
Pure functions of the runner's results: nothing here reads a database or fails.
"""

from __future__ import annotations

from .runner import ScenarioResult


def scenario_dict(r: ScenarioResult) -> dict:
    cmp = r.comparison or {}
    return {
        "scenario": r.scenario, "title": r.title, "database": r.database, "ok": r.ok,
        "time_to_detect_seconds": _round(r.time_to_detect), "time_to_recover_seconds": _round(r.time_to_recover),
        "documents_lost": r.documents_lost, "checks_clean": r.checks_after == [],
        "rto": r.rto, "rpo": r.rpo,
        "incident": r.incident_id, "merged_incidents": r.merged, "backup": r.backup_id,
        "dataset": r.dataset, "faults": r.faults, "steps": r.steps,
        "checks_before": r.checks_before, "checks_after": r.checks_after,
        "comparison": cmp or None,
        "differing_ids": {k: cmp.get(k) for k in ("missing", "changed", "extra") if cmp.get(k)},
        "phases": [p.as_dict() for p in r.phases],
        "postmortem": r.postmortem, "notes": r.notes, "error": r.error,
    }


def summary(results: list[ScenarioResult]) -> dict:
    rows = [scenario_dict(r) for r in results]
    lost = [x["documents_lost"] for x in rows]
    return {
        "ok": bool(rows) and all(x["ok"] for x in rows),
        "scenarios": rows,
        "total": {
            "scenarios": len(rows), "passed": sum(1 for x in rows if x["ok"]),
            "failed": [x["scenario"] for x in rows if not x["ok"]],
            "documents_lost": None if any(v is None for v in lost) else sum(lost),
            "seconds": round(sum(p["seconds"] for x in rows for p in x["phases"]), 3),
            "checks_clean": all(x["checks_clean"] for x in rows),
            "rto_met": all(x["rto"].get("met") is True for x in rows),
            "rpo_met": all(x["rpo"].get("met") is True for x in rows),
        },
    }


def seconds_text(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 120:
        return f"{value:.1f}s"
    if value < 7200:
        return f"{value / 60:.1f}m"
    return f"{value / 3600:.1f}h"


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 3)
