"""Inferences as policy: the rules of each collection, and a whole policy file around them that
`policy validate` accepts (the packaged playbook sections, with the inferred collections).

Whatever the data holds, the output must load: rule ids are made of the allowed characters and
unique (non-ASCII and empty keys are transliterated or spelled out), types the policy cannot
name are left out rather than guessed, fields a dotted path cannot address (a key with a dot or
a leading ``$``) get no rule, and every collection a reference points at is declared. The result
is checked with the policy loader before it is returned; a failure there is a bug, raised as one.
"""

from __future__ import annotations

import re
import unicodedata
from typing import get_args

import yaml

from ..errors import FluxaError
from ..policy.loader import PolicyError, default_policy, parse_policy
from ..policy.rules import BsonType
from .infer import ELEMENTS, WILD, FieldStats, Inference, Path, display

POLICY_TYPES = set(get_args(BsonType))
TYPE_SHARE = 0.99  # types covering this share of values go into the rule; the rest are outliers
MAX_ALLOWED_KEYS = 20
_ID_CHARS = re.compile(r"[^A-Za-z0-9_.:-]+")


def rule_id_part(name: str) -> str:
    """A key as rule-id text: ASCII letters kept, accents dropped, anything else spelled as
    ``u<hex>`` so distinct keys stay distinct (``名`` -> ``u540d``); the empty key is ``_empty``."""
    if name == "":
        return "_empty"
    out = []
    for ch in name:
        if re.fullmatch(r"[A-Za-z0-9_:-]", ch):
            out.append(ch)
            continue
        ascii_ = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode()
        ascii_ = _ID_CHARS.sub("", ascii_).replace(".", "")
        out.append(ascii_ if ascii_ else f"u{ord(ch):x}")
    return "".join(out)


class _Ids:
    def __init__(self) -> None:
        self.used: set[str] = set()

    def make(self, collection: str, path: Path, what: str) -> str:
        base = ".".join([rule_id_part(collection), *(rule_id_part(p) for p in path), what])
        if not re.match(r"[A-Za-z0-9]", base):
            base = "c" + base
        rid, n = base, 2
        while rid in self.used:
            rid, n = f"{base}-{n}", n + 1
        self.used.add(rid)
        return rid


def _addressable(path: Path) -> bool:
    return all("." not in p and not p.startswith("$") for p in path) and not ({WILD, ELEMENTS} & set(path))


def _types(f: FieldStats) -> tuple[list[str] | None, dict]:
    """The types covering TYPE_SHARE of the values (None when one cannot be named in a policy),
    and the outliers left out."""
    covered, types = 0, []
    for t, c in f.types.most_common():
        if covered >= TYPE_SHARE * f.present:
            break
        types.append(t)
        covered += c
    outliers = {t: c for t, c in f.types.items() if t not in types}
    if not set(types) <= POLICY_TYPES:
        return None, outliers
    return types, outliers


def collection_rules(inf: Inference, ids: _Ids | None = None) -> dict:
    """The inference as a ``collections:`` entry of a policy file."""
    ids = ids or _Ids()
    rules: list[dict] = []
    coll = inf.collection
    skipped: list[str] = []
    for path, f in inf.fields.items():
        if path == ("_id",) or not f.present:
            continue
        if not _addressable(path):
            if not ({WILD, ELEMENTS} & set(path)):
                skipped.append(display(path))
            continue
        field_ = ".".join(path)
        rule: dict = {"id": ids.make(coll, path, "type"), "kind": "field", "field": field_}
        if f.present == inf.docs:
            rule["required"] = True
        else:
            rule["only_if_present"] = True
        types, outliers = _types(f)
        notes = []
        if types is None:
            notes.append(f"types not checked: {', '.join(sorted(f.types))} include a type a policy cannot name")
        else:
            rule["types"] = types
        # always explicit: unset on a required field means "null refused", which would flag a
        # field present everywhere but sometimes null (types [string, null]) on its own data
        rule["nullable"] = "null" in (types if types is not None else f.types)
        if inf.enum_candidate(f) and types == ["string"]:
            rule["enum"] = sorted(f.enum_values)
        if outliers:
            notes.append(f"outlier types seen: {dict(sorted(outliers.items()))}")
        if f.is_map:
            _map_settings(inf, f, rule, notes)
        elements = inf.stats(path + (ELEMENTS,))
        if elements is not None and types and "array" in types:
            _array_settings(inf, elements, rule)
        rule["description"] = "; ".join(["inferred", *notes])
        rules.append(rule)
        if f.keys and types and "object" in types and not f.is_map and len(f.keys) <= MAX_ALLOWED_KEYS:
            rules.append({"id": ids.make(coll, path, "keys"), "kind": "field", "field": field_, "only_if_present": True,
                          "types": ["object"], "allowed_keys": sorted(f.keys)})
        if inf.unique_candidate(f):
            rules.append({"id": ids.make(coll, path, "unique"), "kind": "unique", "fields": [field_]})
        elif inf.near_unique(f):
            dups = ", ".join(f"{v!r} x{n}" for v, n in f.duplicates.values())
            rules.append({"id": ids.make(coll, path, "unique"), "kind": "unique", "fields": [field_], "enabled": False,
                          "description": f"likely unique key: {f.repeats} repeated value(s) among {f.present} "
                                         f"({dups}); enable once the duplicates are resolved"})
        for ref_path, array in ((path, False), (path + (ELEMENTS,), True)):
            if ref_path in inf.references:
                target, to_field, _share = inf.references[ref_path]
                ref = {"id": ids.make(coll, path, "ref"), "kind": "reference", "field": field_, "to": target}
                if to_field != "_id":
                    ref["to_field"] = to_field
                if array:
                    ref["array"] = True
                ref["required"] = f.present == inf.docs and not array
                rules.append(ref)
    description = f"inferred from {inf.docs} documents"
    if skipped:
        description += f"; no rule for keys a dotted path cannot name: {', '.join(skipped)}"
    return {coll: {"description": description, "rules": rules}}


def _map_settings(inf: Inference, f: FieldStats, rule: dict, notes: list) -> None:
    """One rule for a map, whatever its number of keys: the keys' pattern and the values' types."""
    pattern = inf.key_pattern(f)
    if pattern:
        rule["key_pattern"] = pattern
    values = inf.stats(f.path + (WILD,))
    if values is not None:
        vtypes, _ = _types(values)
        if vtypes:
            rule["values_types"] = vtypes
    notes.append("a map: its keys are data" + (f" matching {pattern}" if pattern else ""))


def _array_settings(inf: Inference, elements: FieldStats, rule: dict) -> None:
    vtypes, _ = _types(elements)
    if vtypes:
        rule["values_types"] = vtypes
    if inf.enum_candidate(elements) and vtypes == ["string"]:
        rule["values_enum"] = sorted(elements.enum_values)


def policy_document(inferences: list[Inference], application: str = "") -> dict:
    """A whole policy: the packaged playbook sections (classes cover nothing yet) and the
    inferred collections, plus an empty entry for every collection a reference points at."""
    ids = _Ids()
    collections: dict = {}
    for inf in inferences:
        collections.update(collection_rules(inf, ids))
    for entry in list(collections.values()):
        for rule in entry["rules"]:
            if rule["kind"] == "reference" and rule["to"] not in collections:
                collections[rule["to"]] = {"description": "referenced by inferred rules; not inferred", "rules": []}
    doc = default_policy().model_dump(mode="json", exclude_defaults=True)
    for dc in doc["data_classes"]:
        dc["covers"] = []  # the packaged classes cover the Fluxa collections; classify yours
    doc["application"] = application
    doc["collections"] = collections
    # the packaged migrations describe Fluxa's conversations; yours are declared by hand
    doc["migrations"] = []
    return doc


def render_policy(doc: dict, unicode: bool = True) -> str:
    """The policy as YAML, checked by the loader: output that would not load is a bug."""
    text = yaml.safe_dump(doc, sort_keys=False, width=110, allow_unicode=unicode)
    try:
        parse_policy(text, "<inferred policy>")
    except PolicyError as exc:
        raise FluxaError(f"schema inference produced a policy that does not load: {exc.message}",
                         "this is a bug in schema inference; please report it with the collection's shape") from exc
    return text
