"""Schema inference: field presence and types, candidate unique keys, enums and references of a
collection nobody documented. It only reads.

One pass over the collection (or its first ``limit`` documents); ``infer_documents`` takes any
iterable of decoded documents (tests feed what the dev server cannot store). Statistics are kept
per field path, a tuple of keys with two markers: ``*`` for any key of a map (a sub-document
whose keys are data: hash-like keys, or more than ``MAP_KEYS`` distinct keys) and ``[]`` for the
elements of an array. So a map keyed by thousands of hashes is one field, not thousands, and
memory stays bounded by the shape of the documents, not their number (unique-key candidates
keep 8-byte hashes until they are ruled out). References are found by looking a sample of a
field's distinct values up in every collection's ``_id`` and id-like fields: one query per
collection. ``policy.py`` turns inferences into a policy file.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

from bson import Code, MaxKey, MinKey
from pymongo.database import Database

from ..checks.values import bson_type, key_hash

MAX_DEPTH = 4
ENUM_MAX = 12  # at most this many distinct strings make an enum candidate
REF_SAMPLE = 500  # distinct values per field looked up in other collections
REF_SHARE = 0.9  # share of sampled values that must resolve for a reference candidate
TARGET_SAMPLE = 200  # documents read from each collection to find its id-like fields
MAP_KEYS = 50  # a sub-document with more distinct keys (across documents) is a map
UNIQUE_TYPES = {"string", "objectId", "int", "long", "binData"}  # types a key is made of
REF_TYPES = {"string", "objectId", "int", "long"}
SMALL_SAMPLE = 1000  # fewer documents: distinct values prove nothing unless the name says "key"
NEAR_UNIQUE_SHARE = 0.002  # at most this share of repeated values: a likely key with bad data
NEAR_UNIQUE_MIN = 500  # ... among at least this many values
DUPLICATES_SHOWN = 10
WILD, ELEMENTS = "*", "[]"
HASH_KEY = re.compile(r"^(?:[0-9a-fA-F]{16,}|[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12})$")
KEY_NAME = re.compile(r"(?:^|[_\-.])(?:id|uuid|guid|code|key|sku|slug|email|username|login|handle|number|ref)$"
                      r"|[a-z0-9](?:Id|ID|Uuid|UUID|Code|Key|Sku|SKU|Slug|Email|Username|Number|No|Ref)$"
                      r"|^(?:uuid|guid|code|key|sku|slug|email|username|login|handle|isbn|iban)$", re.IGNORECASE)

Path = tuple[str, ...]


def value_type(value) -> str:
    """``bson_type``, telling apart what it folds in: Code is a str subclass to pymongo."""
    if isinstance(value, Code):
        return "javascript"
    if isinstance(value, (MinKey, MaxKey)):
        return "minKey" if isinstance(value, MinKey) else "maxKey"
    return bson_type(value)


def display(path: Path) -> str:
    """``("carts", "*", "total")`` -> ``carts.*.total``; ``("tags", "[]")`` -> ``tags[]``."""
    text = ""
    for part in path:
        text += part if part == ELEMENTS else (f".{part}" if text else part)
    return text or "(document)"


def key_like(path: Path) -> bool:
    return bool(KEY_NAME.search(path[-1]))


@dataclass
class FieldStats:
    path: Path
    present: int = 0
    types: Counter = field(default_factory=Counter)
    distinct: set | None = field(default_factory=set)  # value hashes while a unique-key candidate
    repeats: int = 0  # values seen again (a unique key has none; a near-unique one a few)
    duplicates: dict = field(default_factory=dict)  # hash -> [value, count], the first few
    enum_values: Counter | None = field(default_factory=Counter)
    ref_values: dict | None = field(default_factory=dict)  # distinct sample (ordered set)
    keys: set = field(default_factory=set)  # sub-document keys seen, up to MAP_KEYS + 1
    is_map: bool = False
    key_shapes: Counter = field(default_factory=Counter)  # of a map: (charset, length) of its keys

    def observe(self, value) -> None:
        self.present += 1
        t = value_type(value)
        self.types[t] += 1
        if self.distinct is not None:
            if t in UNIQUE_TYPES:
                self._count_distinct(value)
            elif t != "null":
                self.distinct = None
        if self.enum_values is not None and t == "string":
            self.enum_values[value] += 1
            if len(self.enum_values) > ENUM_MAX:
                self.enum_values = None
        if self.ref_values is not None and t in REF_TYPES and len(self.ref_values) < REF_SAMPLE:
            self.ref_values[value] = None
        if t == "object":
            was_map = self.is_map
            for k in value:
                if len(self.keys) <= MAP_KEYS:
                    self.keys.add(k)
                if HASH_KEY.match(k):
                    self.is_map = True
            if len(self.keys) > MAP_KEYS:
                self.is_map = True
            if self.is_map and not was_map:
                # the keys of earlier documents are all in self.keys (it only fills up to the
                # tipping point): their shapes count too, or key_pattern would flag them
                self.key_shapes.update(_key_shape(k) for k in self.keys if k not in value)
            if self.is_map:
                self.key_shapes.update(_key_shape(k) for k in value)

    def _count_distinct(self, value) -> None:
        h = key_hash(value.casefold() if isinstance(value, str) else value)
        if h not in self.distinct:
            self.distinct.add(h)
            return
        self.repeats += 1
        if h in self.duplicates:
            self.duplicates[h][1] += 1
        elif len(self.duplicates) < DUPLICATES_SHOWN:
            self.duplicates[h] = [value, 2]
        if self.repeats > max(2, NEAR_UNIQUE_SHARE * self.present):
            self.distinct, self.duplicates = None, {}  # not a key: stop paying for the hashes

    def merge(self, other: "FieldStats") -> None:
        """Fold ``other`` (the same place under another map key) into this one."""
        self.present += other.present
        self.types.update(other.types)
        self.distinct, self.duplicates = None, {}  # values under different keys: no key claim
        if self.enum_values is not None and other.enum_values is not None:
            self.enum_values.update(other.enum_values)
            if len(self.enum_values) > ENUM_MAX:
                self.enum_values = None
        else:
            self.enum_values = None
        if self.ref_values is not None and other.ref_values is not None:
            for v in other.ref_values:
                if len(self.ref_values) < REF_SAMPLE:
                    self.ref_values[v] = None
        self.keys |= other.keys
        self.is_map = self.is_map or other.is_map
        self.key_shapes.update(other.key_shapes)

    @property
    def main_types(self) -> set[str]:
        return set(self.types) - {"null"}


def _key_shape(key: str) -> tuple[str, int]:
    for name, charset in (("hex", "0-9a-f"), ("HEX", "0-9A-F"), ("digits", "0-9")):
        if re.fullmatch(f"[{charset}]+", key):
            return name, len(key)
    if re.fullmatch(r"[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}", key):
        return "uuid", len(key)
    return "other", len(key)


@dataclass
class Inference:
    collection: str
    docs: int
    fields: dict[Path, FieldStats]
    references: dict[Path, tuple[str, str, float]]  # path -> (collection, field, share of sample found)

    def stats(self, path: Path) -> FieldStats | None:
        return self.fields.get(path)

    def unique_candidate(self, f: FieldStats) -> bool:
        return self._key_shaped(f) and f.repeats == 0 and (self.docs >= SMALL_SAMPLE or key_like(f.path))

    def near_unique(self, f: FieldStats) -> bool:
        """A likely key whose data has a few duplicates (one among thousands): worth a look."""
        return self._key_shaped(f) and 0 < f.repeats <= NEAR_UNIQUE_SHARE * f.present and f.present >= NEAR_UNIQUE_MIN

    def _key_shaped(self, f: FieldStats) -> bool:
        return (f.path != ("_id",) and f.distinct is not None and self.docs >= 2 and f.present >= 0.95 * self.docs
                and bool(f.main_types) and f.main_types <= UNIQUE_TYPES and not ({WILD, ELEMENTS} & set(f.path)))

    def enum_candidate(self, f: FieldStats) -> bool:
        return bool(f.enum_values) and f.present >= 20 and len(f.enum_values) < f.present / 2

    def key_pattern(self, f: FieldStats) -> str | None:
        """A regex all keys of map ``f`` match, when they share one shape (hex of one length...)."""
        shapes = {name for name, _ in f.key_shapes}
        lengths = sorted({n for _, n in f.key_shapes})
        if len(shapes) != 1 or "other" in shapes:
            return None
        if shapes == {"uuid"}:
            return r"^[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$"
        charset = {"hex": "0-9a-f", "HEX": "0-9A-F", "digits": "0-9"}[shapes.pop()]
        size = str(lengths[0]) if len(lengths) == 1 else f"{lengths[0]},{lengths[-1]}"
        return f"^[{charset}]{{{size}}}$"

    def as_dict(self) -> dict:
        out = {"collection": self.collection, "docs": self.docs, "fields": {}}
        for p, f in self.fields.items():
            ref = self.references.get(p)
            out["fields"][display(p)] = {
                "presence": round(f.present / self.docs, 4) if self.docs else 0,
                "types": {t: round(n / f.present, 4) for t, n in f.types.most_common()},
                "unique_candidate": self.unique_candidate(f),
                "near_unique": {"repeats": f.repeats, "duplicates": [
                    {"value": v, "count": n} for v, n in f.duplicates.values()]} if self.near_unique(f) else None,
                "enum_candidate": sorted(f.enum_values) if self.enum_candidate(f) else None,
                "map": {"key_pattern": self.key_pattern(f)} if f.is_map else None,
                "reference": {"collection": ref[0], "field": ref[1], "share": ref[2]} if ref else None,
            }
        return out


def infer(db: Database, collection: str, limit: int | None = None, on_batch=None) -> Inference:
    cursor = db[collection].find({}, batch_size=2000)
    if limit:
        cursor = cursor.limit(limit)
    return infer_documents(collection, cursor, db, on_batch)


def infer_documents(collection: str, docs: Iterable[dict], db: Database | None = None, on_batch=None) -> Inference:
    """Inference over ``docs``; references are looked up in ``db`` when given."""
    stats: dict[Path, FieldStats] = {}
    n = 0
    for doc in docs:
        n += 1
        _walk(doc, (), 0, stats)
        if on_batch and n % 2000 == 0:
            on_batch(2000)
    refs = _references(db, collection, stats) if db is not None else {}
    return Inference(collection, n, dict(sorted(stats.items(), key=lambda kv: [str(p) for p in kv[0]])), refs)


def _walk(doc: dict, prefix: Path, depth: int, stats: dict[Path, FieldStats]) -> None:
    for k, v in doc.items():
        parent = stats.get(prefix) if prefix else None
        path = prefix + (WILD if parent is not None and parent.is_map else k,)
        _observe(path, v, depth, stats)


def _observe(path: Path, value, depth: int, stats: dict[Path, FieldStats]) -> None:
    st = stats.get(path)
    if st is None:
        st = stats[path] = FieldStats(path)
    was_map = st.is_map
    st.observe(value)
    if st.is_map and not was_map:
        _fold_into_wildcard(path, stats)
    if depth + 1 >= MAX_DEPTH:
        return
    if isinstance(value, dict):
        _walk(value, path, depth + 1, stats)
    elif isinstance(value, list):
        for item in value:
            _observe(path + (ELEMENTS,), item, depth + 1, stats)


def _fold_into_wildcard(path: Path, stats: dict[Path, FieldStats]) -> None:
    """``path`` just turned out to be a map: its per-key fields so far become ``path.*`` fields."""
    n = len(path)
    for p in [p for p in stats if len(p) > n and p[:n] == path and p[n] not in (WILD, ELEMENTS)]:
        old = stats.pop(p)
        target = path + (WILD,) + p[n + 1:]
        if target in stats:
            stats[target].merge(old)
        else:
            old.path = target
            old.distinct, old.duplicates = None, {}
            stats[target] = old


# --- references ------------------------------------------------------------------------------------

def _reference_sources(stats: dict[Path, FieldStats]) -> dict[Path, list]:
    """Fields whose values could point into another collection: ids, codes, not enums or numbers
    that merely count. Array elements (``tags[]``) are candidates for arrays of references."""
    out = {}
    for path, st in stats.items():
        if path == ("_id",) or WILD in path or (ELEMENTS in path and path.index(ELEMENTS) != len(path) - 1):
            continue
        main = st.main_types
        if not main or not main <= REF_TYPES or not st.ref_values or len(st.ref_values) < 2:
            continue
        name = path[:-1] if path[-1] == ELEMENTS else path
        if main & {"int", "long"} and not key_like(name):
            continue  # quantities and counters resolve in any collection keyed by small integers
        if "string" in main and st.enum_values is not None and len(st.enum_values) <= ENUM_MAX and not key_like(name):
            continue  # a handful of labels, not keys
        out[path] = list(st.ref_values)
    return out


def _target_fields(db: Database, coll: str) -> list[str]:
    """``_id`` and the top-level fields of ``coll`` that look like keys in a sample: scalar
    values of key types, all distinct."""
    seen: dict[str, set] = {}
    bad: set[str] = set()
    for doc in db[coll].find({}, limit=TARGET_SAMPLE):
        for k, v in doc.items():
            if k == "_id" or k in bad:
                continue
            if value_type(v) not in REF_TYPES or (k in seen and v in seen[k]):
                bad.add(k)
                continue
            seen.setdefault(k, set()).add(v)
    return ["_id"] + [k for k in seen if k not in bad and "." not in k and not k.startswith("$")]


def _references(db: Database, collection: str, stats: dict[Path, FieldStats]) -> dict[Path, tuple[str, str, float]]:
    sources = _reference_sources(stats)
    if not sources:
        return {}
    values = list({v: None for sample in sources.values() for v in sample})
    best: dict[Path, tuple[str, str, float]] = {}
    for other in sorted(c for c in db.list_collection_names() if not c.startswith("system.")):
        targets = _target_fields(db, other)
        found: dict[str, set] = {t: set() for t in targets}
        query = {"$or": [{t: {"$in": values}} for t in targets]}
        for doc in db[other].find(query, {t: 1 for t in targets}):
            for t in targets:
                v = doc.get(t)
                if v is not None and not isinstance(v, (list, dict)):
                    found[t].add(v)
        for path, sample in sources.items():
            for t in targets:
                if other == collection and (t,) == path:
                    continue  # a field always resolves in itself
                share = sum(1 for v in sample if v in found[t]) / len(sample)
                current = best.get(path)
                if share >= REF_SHARE and (current is None or share > current[2]
                                           or (share == current[2] and t == "_id" and current[1] != "_id")):
                    best[path] = (other, t, round(share, 4))
    return best
