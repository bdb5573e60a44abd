"""The public status page (/status) and its Atom feed (/status/feed.atom): no login.

One component per data class of the policy (by its title), in one of Statuspage's states, derived
from the live incidents that touch the class (drills never count):

- operational: no live incident touches the class;
- major outage: a live incident of the most severe level (the policy's first, P1) before recovery;
- partial outage: a live incident of a lower level before recovery;
- degraded performance: every incident on the class is recovering (the data is being restored);
- under maintenance: recovering with the incident's read-only containment on (writes paused
  while the data is put back).

The worst state over the class's incidents wins (major > partial > degraded > maintenance).
Updates are the communications published from the incident engine's templates (`incident comms
--publish`, the console's Publish), grouped by incident, newest first, with their history; an
incident is shown as resolved once it is resolved or closed.

Nothing internal is shown: no incident ids, titles or descriptions (they are written for
responders), no collections, databases, people or emails. What is shown is the published text
(written to be public; email addresses in it are masked anyway, as for a viewer), the data
classes' titles, the states and the times. Update groups are told apart by a hash, never an id.
"""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from datetime import datetime, timezone

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ..incidents.severity import rank
from .masking import mask_text
from .pages import page
from .reading import incidents_of

router = APIRouter(include_in_schema=False)

STATES = ("operational", "under maintenance", "degraded performance", "partial outage", "major outage")
LABEL = {"operational": "Operational", "under maintenance": "Under maintenance",
         "degraded performance": "Degraded performance", "partial outage": "Partial outage",
         "major outage": "Major outage"}
LIVE = ("open", "acknowledged", "investigating", "recovering")


def state_of(policy, inc: dict) -> str:
    """The component state one live incident implies (docs/web.md, status page)."""
    if inc["status"] == "recovering":
        return "under maintenance" if inc.get("read_only") else "degraded performance"
    return "major outage" if rank(policy, inc["severity"]) == 0 else "partial outage"


def public_status(api) -> dict:
    """Components and updates, public fields only."""
    policy = api.policy
    incidents = [i for i in api.list() if not i["drill"] and i["duplicate_of"] is None]
    components = []
    for dc in policy.data_classes:
        states = [state_of(policy, i) for i in incidents if i["status"] in LIVE and dc.name in (i["data_classes"] or [])]
        state = max(states, key=STATES.index, default="operational")
        components.append({"name": dc.title, "state": state, "label": LABEL[state]})
    titles = {d.name: d.title for d in policy.data_classes}
    by_incident = {i["id"]: i for i in incidents}
    pubs: dict[int, list[dict]] = {}
    for p in api.publications():
        if p["incident"] in by_incident:
            pubs.setdefault(p["incident"], []).append(p)
    groups = []
    for iid, items in pubs.items():
        inc = by_incident[iid]
        first = items[0]
        key = hashlib.sha256(f"{first['published_at']}|{first['title']}|{first['text']}".encode()).hexdigest()[:16]
        groups.append({
            "key": key, "resolved": inc["status"] not in LIVE,
            "state": "resolved" if inc["status"] not in LIVE else LABEL[state_of(policy, inc)],
            "components": [titles[c] for c in inc["data_classes"] or [] if c in titles],
            "updates": [{"title": mask_text(p["title"], True), "text": mask_text(p["text"], True),
                         "published_at": p["published_at"],
                         "key": hashlib.sha256(f"{key}|{p['published_at']}|{p['title']}".encode()).hexdigest()[:16]}
                        for p in reversed(items)],  # newest first
        })
    groups.sort(key=lambda g: g["updates"][0]["published_at"], reverse=True)
    worst = max((c["state"] for c in components), key=STATES.index, default="operational")
    overall = {"operational": "All systems operational", "under maintenance": "Maintenance in progress",
               "degraded performance": "Some systems degraded", "partial outage": "Partial outage",
               "major outage": "Major outage"}[worst]
    return {"components": components, "groups": groups, "overall": overall, "worst": worst}


@router.get("/status")
def status_page(request: Request):
    return page("status.html", **public_status(incidents_of(request)))


ATOM = "http://www.w3.org/2005/Atom"


@router.get("/status/feed.atom")
def feed(request: Request):
    """Every published update as an Atom entry, newest first."""
    data = public_status(incidents_of(request))
    base = str(request.base_url).rstrip("/")
    ET.register_namespace("", ATOM)
    root = ET.Element(f"{{{ATOM}}}feed")
    ET.SubElement(root, f"{{{ATOM}}}title").text = "Status updates"
    ET.SubElement(root, f"{{{ATOM}}}id").text = f"{base}/status"
    ET.SubElement(root, f"{{{ATOM}}}link", href=f"{base}/status")
    ET.SubElement(root, f"{{{ATOM}}}link", rel="self", href=f"{base}/status/feed.atom")
    entries = sorted((u for g in data["groups"] for u in g["updates"]), key=lambda u: u["published_at"], reverse=True)
    updated = entries[0]["published_at"] if entries else datetime(2000, 1, 1, tzinfo=timezone.utc).isoformat()
    ET.SubElement(root, f"{{{ATOM}}}updated").text = updated
    author = ET.SubElement(root, f"{{{ATOM}}}author")
    ET.SubElement(author, f"{{{ATOM}}}name").text = "Status page"
    for u in entries:
        e = ET.SubElement(root, f"{{{ATOM}}}entry")
        ET.SubElement(e, f"{{{ATOM}}}id").text = f"{base}/status#update-{u['key']}"
        ET.SubElement(e, f"{{{ATOM}}}title").text = u["title"]
        ET.SubElement(e, f"{{{ATOM}}}updated").text = u["published_at"]
        ET.SubElement(e, f"{{{ATOM}}}link", href=f"{base}/status#update-{u['key']}")
        ET.SubElement(e, f"{{{ATOM}}}content", type="text").text = u["text"]
    body = b'<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="utf-8", xml_declaration=False)
    return Response(body, media_type="application/atom+xml")
