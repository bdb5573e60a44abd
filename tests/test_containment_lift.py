"""A failed ``incident lift`` leaves the application contained (S22): the roles it gave back are
revoked again when the flags write fails, as a failed contain gives revoked roles back.

User management is faked (FerretDB has none: test_containment.py covers the real MongoDB path);
the flags write fails at the driver, where a real refusal (no readWrite on fluxa_integrity) would.
"""

from __future__ import annotations

import pytest

from fluxa_integrity.containment_reader import FLAGS_COLLECTION, FLAGS_DB, ContainmentReader
from fluxa_integrity.errors import FluxaError
from fluxa_integrity.incidents.api import Incidents
from fluxa_integrity.policy import default_policy
from fluxa_integrity.store import open_store


@pytest.fixture()
def api(tmp_path):
    return Incidents(open_store(f"sqlite:///{tmp_path / 'state.db'}"), default_policy())


def open_incident(api, db, collections=("messages",)) -> int:
    return api.open("Messages vanish", collections=list(collections), database=db.name)["id"]


def test_a_lift_whose_flags_write_fails_leaves_the_app_user_contained(api, db, monkeypatch):
    """A server that manages users (faked: FerretDB has none) and a flags write that fails on
    lift: the roles given back are revoked again, so the user, the record and the flags all still
    say read-only; the next lift, once the flags write works, gives them back for good."""
    from pymongo.collection import Collection
    from pymongo.errors import OperationFailure

    from fluxa_integrity.incidents import app_roles

    roles = {"state": "full"}
    record = {"user": "fluxa_app", "db": "admin", "revoked": [{"role": "readWrite", "db": db.name}],
              "granted": [{"role": "read", "db": db.name}]}

    def revoke(client, user, user_db, database):
        roles["state"] = "read-only"
        return record

    def give_back(client, rec):
        roles["state"] = "full"
        return {"user": rec["user"], "db": rec["db"], "restored": rec["revoked"], "removed": rec["granted"]}

    def revoke_exactly(client, rec):
        roles["state"] = "read-only"

    monkeypatch.setattr(app_roles, "probe", lambda client: (True, "managed"))
    monkeypatch.setattr(app_roles, "revoke_writes", revoke)
    monkeypatch.setattr(app_roles, "restore", give_back)
    monkeypatch.setattr(app_roles, "revoke_exactly", revoke_exactly, raising=False)
    failing = {"on": False}
    real_replace = Collection.replace_one

    def replace_one(self, *a, **k):
        if failing["on"] and self.full_name == f"{FLAGS_DB}.{FLAGS_COLLECTION}":
            raise OperationFailure("not authorized on fluxa_integrity to execute command update", 13)
        return real_replace(self, *a, **k)

    monkeypatch.setattr(Collection, "replace_one", replace_one)
    iid = open_incident(api, db)
    assert api.contain(iid, db, read_only=True, app_user="fluxa_app")["containment_result"]["user_management"] == "revoked"
    assert roles["state"] == "read-only"

    failing["on"] = True
    with pytest.raises(FluxaError, match="could not write the containment flags"):
        api.lift(iid, db)
    assert roles["state"] == "read-only"  # given back, then revoked again: still contained
    assert api.get(iid)["read_only"] is True
    assert not ContainmentReader(db.client, db.name, ttl=0).is_writable("messages")
    assert not [e for e in api.timeline(iid) if e["kind"] == "lifted"]

    failing["on"] = False
    assert api.lift(iid, db)["containment_result"]["user_management"] == "restored"
    assert roles["state"] == "full"
    assert ContainmentReader(db.client, db.name, ttl=0).is_writable("messages")
