"""The ground-truth manifest of injected faults: what was broken, where, when.

One JSON file per database (Extended JSON, so ObjectIds stay ObjectIds). Tests and
benchmarks score detection against it exactly. Each write replaces the file atomically.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bson import json_util

from ..home import fluxa_home

JSON_OPTS = json_util.RELAXED_JSON_OPTIONS.with_options(tz_aware=True, tzinfo=timezone.utc)


@dataclass
class Injection:
    kind: str
    collection: str  # "<coll>" in the application database, or "<db>.<coll>" elsewhere
    ids: list[Any]
    time: datetime
    variants: list[str] | None = None  # per id, for kinds with several flavours
    related: list[Any] = field(default_factory=list)  # ids touched but not themselves faulty
    details: dict = field(default_factory=dict)

    def as_doc(self) -> dict:
        d = {"kind": self.kind, "collection": self.collection, "ids": self.ids, "time": self.time}
        if self.variants is not None:
            d["variants"] = self.variants
        if self.related:
            d["related"] = self.related
        if self.details:
            d["details"] = self.details
        return d

    @classmethod
    def from_doc(cls, d: dict) -> "Injection":
        return cls(kind=d["kind"], collection=d["collection"], ids=list(d["ids"]), time=d["time"],
                   variants=d.get("variants"), related=list(d.get("related", [])),
                   details=d.get("details", {}))


def default_manifest_path(db: str) -> Path:
    path = fluxa_home() / "faults" / f"{db}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


class Manifest:
    def __init__(self, path: Path, db: str):
        self.path = Path(path)
        self.db = db
        self.dataset: dict = {}
        self.injections: list[Injection] = []
        if self.path.exists():
            doc = json_util.loads(self.path.read_text(), json_options=JSON_OPTS)
            self.dataset = doc.get("dataset", {})
            self.injections = [Injection.from_doc(d) for d in doc.get("injections", [])]

    def reset(self, dataset: dict) -> None:
        """A new dataset starts a new manifest."""
        self.dataset = dataset
        self.injections = []
        self.save()

    def append(self, inj: Injection) -> None:
        self.injections.append(inj)
        self.save()

    def touched(self, collection: str) -> set:
        """Every id already faulted or used as a counterpart in ``collection``."""
        out: set = set()
        for inj in self.injections:
            if inj.collection == collection:
                out.update(inj.ids)
                out.update(inj.related)
        return out

    def by_kind(self) -> dict[str, list[Injection]]:
        out: dict[str, list[Injection]] = {}
        for inj in self.injections:
            out.setdefault(inj.kind, []).append(inj)
        return out

    def save(self) -> None:
        doc = {"database": self.db, "dataset": self.dataset,
               "injections": [i.as_doc() for i in self.injections]}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(json.loads(json_util.dumps(doc, json_options=JSON_OPTS)), indent=1))
        os.replace(tmp, self.path)
