"""The incident state machine.

    open -> acknowledged -> investigating <-> recovering -> resolved -> closed
                 \\_______________________________________/^
                  (resolve from acknowledged, investigating or recovering)

An incident must be acknowledged before it is worked on or resolved (the 1-hour response clock
stops at acknowledgement), and closed only once resolved with a root cause written down.
A resolved incident can be reopened to investigating if the problem comes back.
"""

from __future__ import annotations

from ..errors import FluxaError

STATUSES = ("open", "acknowledged", "investigating", "recovering", "resolved", "closed")
LIVE = ("open", "acknowledged", "investigating", "recovering")  # not resolved yet: clocks run, findings attach
TIMESTAMP = {s: f"{s}_at" for s in STATUSES if s != "open"} | {"open": "opened_at"}

ALLOWED: dict[str, set[str]] = {
    "open": {"acknowledged"},
    "acknowledged": {"investigating", "recovering", "resolved"},
    "investigating": {"recovering", "resolved"},
    "recovering": {"investigating", "resolved"},
    "resolved": {"closed", "investigating"},
    "closed": set(),
}


def check_transition(incident, target: str) -> None:
    """Raise a FluxaError saying why ``incident`` cannot move to ``target``."""
    if target not in STATUSES:
        raise FluxaError(f"unknown status {target!r}", f"one of: {', '.join(STATUSES)}")
    current = incident.status
    if target == current:
        raise FluxaError(f"incident {incident.id} is already {current}")
    if target not in ALLOWED[current]:
        if current == "open" and target != "acknowledged":
            raise FluxaError(f"incident {incident.id} cannot be {target} before it is acknowledged",
                             f"acknowledge it first: `fluxa-integrity incident ack {incident.id}`")
        if target == "closed":
            raise FluxaError(f"incident {incident.id} is {current}: only a resolved incident can be closed",
                             f"resolve it first: `fluxa-integrity incident resolve {incident.id}`")
        if current == "closed":
            raise FluxaError(f"incident {incident.id} is closed; a closed incident does not change",
                             "open a new incident if the problem is back")
        allowed = ", ".join(sorted(ALLOWED[current])) or "nothing"
        raise FluxaError(f"incident {incident.id} cannot go from {current} to {target}", f"from {current}: {allowed}")
    if target == "closed" and not (incident.root_cause or "").strip():
        raise FluxaError(f"incident {incident.id} cannot be closed without a root cause",
                         f"write it: `fluxa-integrity incident postmortem {incident.id} --root-cause TEXT`")
