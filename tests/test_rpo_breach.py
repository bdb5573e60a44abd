"""An RPO breach becomes one incident per database, noted on, never doubled (issue 11; S37, S38).

Ground truth: a real backup of a small generated database; the monitor's rows come from
``rpo_status`` at chosen moments (the default policy: user_accounts RPO 15m, the rest longer).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from backup_helpers import make_data

from fluxa_integrity.backup import catalog
from fluxa_integrity.backup.objectives import rpo_status
from fluxa_integrity.backup.snapshot import BackupOptions, run_backup
from fluxa_integrity.incidents.api import Incidents
from fluxa_integrity.policy.loader import default_policy
from fluxa_integrity.service.leases import aware
from fluxa_integrity.service.rpo_breach import KIND, RpoBreach
from fluxa_integrity.store import open_store


def test_a_breach_opens_one_incident_notes_new_classes_and_the_return(mongo_uri, db, fluxa_home):
    pol, store = default_policy(), open_store()
    api = Incidents(store, pol)
    target = {dc.name: dc.rpo_delta for dc in pol.data_classes}

    # no backup at all: within the first RPO of uptime that is not an incident yet (grace)
    start = datetime.now(timezone.utc)
    judge = RpoBreach(store, pol, db.name, started_at=start)
    early = judge.judge(rpo_status(store, pol, db.name, start + timedelta(seconds=60)), start + timedelta(seconds=60))
    assert early["opened"] is None and api.list("live") == []
    # a whole user_accounts RPO of uptime without a point: one incident, scoped to that class
    at = start + target["user_accounts"] + timedelta(seconds=1)
    first = judge.judge(rpo_status(store, pol, db.name, at), at)
    [inc] = api.list("live")
    assert first["opened"] == inc["id"] and inc["source_kind"] == KIND and inc["database"] == db.name
    assert inc["data_classes"] == ["user_accounts"]
    # the next run sees the same: no second incident, nothing new to say
    again = judge.judge(rpo_status(store, pol, db.name, at), at)
    assert again == {"opened": None, "noted": [], "met_again": False, "incident": inc["id"]}
    # later the other classes pass their RPO with no point: each is noted once, on the same incident
    later = start + max(target.values()) + timedelta(seconds=1)
    more = judge.judge(rpo_status(store, pol, db.name, later), later)
    assert sorted(more["noted"]) == sorted(n for n in target if n != "user_accounts")
    assert judge.judge(rpo_status(store, pol, db.name, later), later)["noted"] == []
    assert len(api.list("live")) == 1

    # a backup makes every class recoverable: noted once as met again, the incident stays for a person
    make_data(db, users=5)
    res = run_backup(mongo_uri, db.name, store, BackupOptions(oplog_probe="clock"))
    taken = aware(catalog.get_backup(store, res.id).started_at) + timedelta(seconds=1)
    met = judge.judge(rpo_status(store, pol, db.name, taken), taken)
    assert met["met_again"] is True and met["incident"] == inc["id"]
    assert judge.judge(rpo_status(store, pol, db.name, taken), taken)["met_again"] is False
    assert api.get(inc["id"])["status"] == "open"
    notes = [e["data"]["text"] for e in api.timeline(inc["id"]) if e["kind"] == "note"]
    assert len(notes) == len(target) - 1 + 1 and notes[-1].startswith("RPO met again")

    # a point that ages past its RPO is a breach at once, even right after start; it joins nothing
    # closed, so after the first incident is closed a new one opens
    api.acknowledge(inc["id"])
    api.resolve(inc["id"], "backup schedule restored")
    stale = taken + target["user_accounts"] + timedelta(seconds=5)
    fresh_judge = RpoBreach(store, pol, db.name, started_at=stale)
    second = fresh_judge.judge(rpo_status(store, pol, db.name, stale), stale)
    assert second["opened"] not in (None, inc["id"])
    assert api.get(second["opened"])["data_classes"] == ["user_accounts"]
