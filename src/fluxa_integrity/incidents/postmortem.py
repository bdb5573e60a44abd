"""The postmortem (S33): numbers and Markdown generated from the incident and its timeline.

Definitions (docs/incidents.md):
- time to detect      = detected_at - issue_started_at (first bad document, or as set)
- time to acknowledge = acknowledged_at - opened_at
- time to resolve     = resolved_at - opened_at
- RTO achieved        = resolved_at - detected_at (opened_at when nothing detected it earlier):
                        how long the data was known broken before service was restored
- RPO achieved        = issue_started_at - recovery_point: the window of data written before the
                        problem that the restore did not bring back (0 when restored to the moment
                        the problem began; n/a when nothing was restored)
Targets are the strictest RTO/RPO among the affected data classes.
"""

from __future__ import annotations

from datetime import timedelta

from ..policy.models import Policy
from .timeutil import fmt_delta, iso, utc


CONTAINMENT_ACTIONS = ("read_only_mode", "pause_features", "lift_read_only", "resume_features")


def _diff(later, earlier) -> timedelta | None:
    return utc(later) - utc(earlier) if later is not None and earlier is not None else None


def numbers(policy: Policy, inc) -> dict:
    classes = [policy.data_class(n) for n in inc.data_classes or [] if n in {d.name for d in policy.data_classes}]
    rto_target = min((d.rto_delta for d in classes), default=None)
    rpo_target = min((d.rpo_delta for d in classes), default=None)
    rpo = _diff(inc.issue_started_at, inc.recovery_point)
    if rpo is not None and rpo < timedelta():
        rpo = timedelta()
    rto = _diff(inc.resolved_at, inc.detected_at or inc.opened_at)
    return {"time_to_detect": _diff(inc.detected_at, inc.issue_started_at),
            "time_to_acknowledge": _diff(inc.acknowledged_at, inc.opened_at),
            "time_to_resolve": _diff(inc.resolved_at, inc.opened_at),
            "rto_achieved": rto, "rto_target": rto_target,
            "rto_met": None if rto is None or rto_target is None else rto <= rto_target,
            "rpo_achieved": rpo, "rpo_target": rpo_target,
            "rpo_met": None if rpo is None or rpo_target is None else rpo <= rpo_target}


def numbers_json(n: dict) -> dict:
    return {k: (v.total_seconds() if isinstance(v, timedelta) else v) for k, v in n.items()}


def _summary(ev) -> str:
    d = ev.data or {}
    keys = ("to", "from", "severity", "role", "person", "reason", "text", "item", "note", "template", "channel",
            "error", "clock", "finding_ids", "title", "status", "result", "action", "ref", "counts")
    return "; ".join(f"{k}: {d[k]}" for k in keys if d.get(k) not in (None, "", [], {}))[:300]


def render(policy: Policy, inc, events: list, findings: list, publications: list, checklist: list) -> str:
    n = numbers(policy, inc)
    scope = inc.scope or {}
    classes = ", ".join(policy.data_class(c).title for c in inc.data_classes or []
                        if c in {d.name for d in policy.data_classes}) or "none classified"
    lines = [f"# Postmortem: incident {inc.id} - {inc.title}", "",
             "## Summary", "",
             f"- Severity: {inc.severity} ({policy.severity.levels.get(inc.severity, '')}); status: {inc.status}",
             f"- Source: {inc.source}" + (f" ({inc.source_kind})" if inc.source_kind else ""),
             f"- Opened {iso(inc.opened_at)}, acknowledged {iso(inc.acknowledged_at) or '-'}, "
             f"resolved {iso(inc.resolved_at) or '-'}, closed {iso(inc.closed_at) or '-'}",
             f"- Roles: " + (", ".join(f"{r}: {p}" for r, p in (inc.roles or {}).items()) or "none assigned"),
             f"- Escalated to: {', '.join(inc.escalated_to or []) or 'nobody'}",
             "", "## Impact", "",
             f"- Data classes: {classes}",
             f"- Collections: {', '.join(inc.collections or []) or '-'}",
             f"- Documents affected: {scope.get('documents', 'unknown')}",
             f"- Users affected: {scope.get('users', 'unknown')}",
             f"- Extent: {scope.get('extent', 'unknown')}; trend: {scope.get('trend', 'unknown')}",
             f"- Time range of affected documents: {' .. '.join(str(t) for t in scope.get('time_range') or []) or 'unknown'}",
             f"- Linked findings: {', '.join(str(f.id) + ' ' + f.rule_id + '/' + f.variant for f in findings) or 'none'}",
             f"- Backups: {', '.join(map(str, inc.backup_ids or [])) or '-'}; restores: "
             f"{', '.join(map(str, inc.restore_ids or [])) or '-'}",
             "", "## Response times", "",
             "| measure | achieved | target |", "|---|---|---|",
             f"| time to detect | {fmt_delta(n['time_to_detect'])} | |",
             f"| time to acknowledge | {fmt_delta(n['time_to_acknowledge'])} | {policy.clocks.acknowledge} |",
             f"| time to resolve | {fmt_delta(n['time_to_resolve'])} | {policy.clocks.resolve} |",
             f"| RTO achieved (detected -> service restored) | {fmt_delta(n['rto_achieved'])} | "
             f"{fmt_delta(n['rto_target'])}{_met(n['rto_met'])} |",
             f"| RPO achieved (data window lost) | {fmt_delta(n['rpo_achieved'])} | "
             f"{fmt_delta(n['rpo_target'])}{_met(n['rpo_met'])} |",
             "", "## Root cause", "", inc.root_cause or "_not written yet_",
             "", "## Contributing factors", ""] + [f"- {x}" for x in inc.contributing_factors or ["_none recorded_"]]
    lines += ["", "## Lessons learned", ""] + [f"- {x}" for x in inc.lessons or ["_none recorded_"]]
    lines += ["", "## Action items", ""] + [f"- [ ] {x}" for x in inc.action_items or []] + \
             ([] if inc.action_items else ["_none recorded_"])
    lines += ["", "## Containment", ""]
    held = [e for e in events if e.kind in ("contained", "lifted")
            or (e.kind == "action" and (e.data or {}).get("action") in CONTAINMENT_ACTIONS)]
    lines += [_containment_row(e) for e in held] or ["_no containment recorded (`incident contain`)_"]
    lines += ["", "## Recovery actions", ""]
    recovered = [e for e in events if e.kind == "recovery_action"]
    if recovered:
        lines += ["| when (UTC) | what | ref | counts | status | by |", "|---|---|---|---|---|---|"]
        lines += [_recovery_row(e) for e in recovered]
    else:
        lines += ["_no restore, promotion or undo recorded with --incident_"]
    ticks = [e for e in events if e.kind in ("action", "checklist") and (e.data or {}).get("phase") in
             ("recovery_planning", "recovery_execution", "service_restoration")]
    if ticks:
        lines += ["", "Checklist:", ""] + [f"- {iso(e.at)} {_summary(e)}" for e in ticks]
    lines += ["", "## Communications", ""]
    lines += [f"- {iso(p.published_at)} {p.title}" for p in publications] or ["_none published_"]
    lines += ["", "## Final state", "",
              f"- Read-only mode: {'on' if inc.read_only else 'off'}; paused features: "
              f"{', '.join(inc.paused_features or []) or 'none'}",
              f"- Checklist: {sum(p['done'] for p in checklist)}/{sum(p['total'] for p in checklist)} items done"]
    lines += ["", "## Timeline", "", "| # | time (UTC) | event | by | details |", "|---|---|---|---|---|"]
    lines += [f"| {e.seq} | {iso(e.at)} | {e.kind} | {e.actor} | {_summary(e).replace('|', '/')} |" for e in events]
    return "\n".join(lines) + "\n"


def counts_text(counts: dict) -> str:
    """{"messages": {"inserted": 3, "replaced": 2}} -> "messages: 3 inserted, 2 replaced"."""
    parts = []
    for name, c in (counts or {}).items():
        if isinstance(c, dict):
            parts.append(f"{name}: " + (", ".join(f"{v} {k}" for k, v in c.items()) or "none"))
        else:
            parts.append(f"{name}: {c}")
    return "; ".join(parts) or "-"


def _recovery_row(e) -> str:
    d = e.data or {}
    what = d.get("action", "?") + (f" - {d['summary']}" if d.get("summary") else "")
    cells = [iso(e.at), what, d.get("ref", ""), counts_text(d.get("counts") or {}), d.get("status", ""), e.actor]
    return "| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |"


def _containment_row(e) -> str:
    """One contain or lift, as `incident contain` / `incident lift` or a checklist action recorded it."""
    d = e.data or {}
    kind = e.kind
    if kind == "action":
        kind, d = d.get("action"), d.get("result") or {}
    parts = []
    if d.get("read_only") is not None:
        parts.append(f"read-only {_words(d['read_only']) or '(already)'}")
    if d.get("paused") is not None:
        parts.append(f"paused {_words(d['paused']) or '(already)'}")
    if d.get("read_only_lifted"):
        parts.append(f"writable again {_words(d['read_only_lifted'])}")
    if d.get("resumed"):
        parts.append(f"resumed {_words(d['resumed'])}")
    if d.get("user_management"):
        parts.append(f"application user: {d['user_management']}")
    return f"- {iso(e.at)} {kind} on {d.get('database') or '-'} by {e.actor}: {'; '.join(parts) or '-'}"


def _words(v) -> str:
    """A list as words (rows written before containment was enforced hold a bare true)."""
    return ", ".join(map(str, v)) if isinstance(v, list) else ("" if v is True else str(v))


def _met(flag) -> str:
    return "" if flag is None else (" (met)" if flag else " (missed)")
