"""Schema inference: field presence and types, candidate unique keys, enums and references,
rendered as a policy snippet. Works on any MongoDB database: it only reads.

One pass over the collection (or its first ``limit`` documents). Unique-key candidates keep
8-byte hashes of values and drop out at their first duplicate; reference candidates are checked
by looking a sample of their distinct values up in every other collection's ``_id``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from pymongo.database import Database

from ..checks.values import bson_type, key_hash

MAX_DEPTH = 3
ENUM_MAX = 12  # at most this many distinct strings make an enum candidate
REF_SAMPLE = 500
TYPE_SHARE = 0.99  # types covering this share of values go into the rule; the rest are outliers


@dataclass
class FieldStats:
    path: str
    present: int = 0
    types: Counter = field(default_factory=Counter)
    distinct: set | None = field(default_factory=set)  # hashes while still unique-candidate
    unique: bool = True
    enum_values: Counter | None = field(default_factory=Counter)
    ref_sample: list = field(default_factory=list)
    keys: set = field(default_factory=set)  # sub-document keys seen

    def observe(self, value) -> None:
        self.present += 1
        t = bson_type(value)
        self.types[t] += 1
        if self.unique and t not in ("object", "array", "null"):
            h = key_hash(value.casefold() if isinstance(value, str) else value)
            if h in self.distinct:
                self.unique, self.distinct = False, None
            else:
                self.distinct.add(h)
        elif t in ("object", "array"):
            self.unique, self.distinct = False, None
        if self.enum_values is not None and t == "string":
            self.enum_values[value] += 1
            if len(self.enum_values) > ENUM_MAX:
                self.enum_values = None
        if t == "objectId" and len(self.ref_sample) < REF_SAMPLE and value not in self.ref_sample:
            self.ref_sample.append(value)
        if t == "object":
            self.keys.update(value.keys())


@dataclass
class Inference:
    collection: str
    docs: int
    fields: dict[str, FieldStats]
    references: dict[str, tuple[str, float]]  # path -> (collection, share of sampled values found)

    def as_dict(self) -> dict:
        out = {"collection": self.collection, "docs": self.docs, "fields": {}}
        for p, f in self.fields.items():
            out["fields"][p] = {
                "presence": round(f.present / self.docs, 4) if self.docs else 0,
                "types": {t: round(n / f.present, 4) for t, n in f.types.most_common()},
                "unique_candidate": self.unique_candidate(f),
                "enum_candidate": sorted(f.enum_values) if self.enum_candidate(f) else None,
                "reference": self.references.get(p),
            }
        return out

    def unique_candidate(self, f: FieldStats) -> bool:
        return f.path != "_id" and f.unique and self.docs >= 2 and f.present >= 0.95 * self.docs

    def enum_candidate(self, f: FieldStats) -> bool:
        return bool(f.enum_values) and f.present >= 20 and len(f.enum_values) < f.present / 2


def infer(db: Database, collection: str, limit: int | None = None, on_batch=None) -> Inference:
    stats: dict[str, FieldStats] = {}
    n = 0
    cursor = db[collection].find({}, batch_size=2000)
    if limit:
        cursor = cursor.limit(limit)
    for doc in cursor:
        n += 1
        _walk(doc, "", 0, stats)
        if on_batch and n % 2000 == 0:
            on_batch(2000)
    refs = _references(db, collection, stats)
    return Inference(collection, n, dict(sorted(stats.items())), refs)


def _walk(doc: dict, prefix: str, depth: int, stats: dict[str, FieldStats]) -> None:
    for k, v in doc.items():
        path = prefix + k
        st = stats.get(path)
        if st is None:
            st = stats[path] = FieldStats(path)
        st.observe(v)
        if isinstance(v, dict) and depth + 1 < MAX_DEPTH:
            _walk(v, path + ".", depth + 1, stats)


def _references(db: Database, collection: str, stats: dict[str, FieldStats]) -> dict[str, tuple[str, float]]:
    """objectId fields whose values are mostly ``_id``s of one other collection."""
    out: dict[str, tuple[str, float]] = {}
    others = [c for c in db.list_collection_names() if not c.startswith("system.")]
    for path, st in stats.items():
        if path == "_id" or not st.ref_sample:
            continue
        best = None
        for other in others:
            found = db[other].count_documents({"_id": {"$in": st.ref_sample}})
            share = found / len(st.ref_sample)
            if share >= 0.9 and (best is None or share > best[1]):
                best = (other, round(share, 4))
        if best:
            out[path] = best
    return out


def policy_snippet(inf: Inference) -> dict:
    """The inference as a `collections:` entry of a policy file."""
    rules: list[dict] = []
    coll = inf.collection
    for path, f in inf.fields.items():
        if path == "_id":
            continue
        rule: dict = {"id": f"{coll}.{path}.type", "kind": "field", "field": path}
        if f.present == inf.docs:
            rule["required"] = True
        else:
            rule["only_if_present"] = True
        covered, types = 0, []
        for t, c in f.types.most_common():
            if covered >= TYPE_SHARE * f.present:
                break
            types.append(t)
            covered += c
        rule["types"] = types
        if "null" not in f.types:
            rule["nullable"] = False
        if inf.enum_candidate(f) and types == ["string"]:
            rule["enum"] = sorted(f.enum_values)
        outliers = {t: c for t, c in f.types.items() if t not in types}
        if outliers:
            rule["description"] = f"inferred; outlier types seen: {outliers}"
        rules.append(rule)
        if f.keys and "object" in types and len(f.keys) <= 20:
            rules.append({"id": f"{coll}.{path}.keys", "kind": "field", "field": path, "only_if_present": True,
                          "types": ["object"], "allowed_keys": sorted(f.keys)})
        if inf.unique_candidate(f):
            rules.append({"id": f"{coll}.{path}.unique", "kind": "unique", "fields": [path]})
        if path in inf.references:
            target, _share = inf.references[path]
            rules.append({"id": f"{coll}.{path}.ref", "kind": "reference", "field": path, "to": target,
                          "required": f.present == inf.docs})
    return {coll: {"description": f"inferred from {inf.docs} documents", "rules": rules}}
