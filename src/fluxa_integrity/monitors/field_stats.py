"""Field statistics of written documents, and the learned field profile they are compared with.

Shape: ``field_metrics(collection, sample)`` -> ``{path: {"missing": share, "null": share,
"types": {bson type: share}}}`` over the ``n`` sampled documents (shares of ``n``; null is not a
type here, it has its own share). Paths are schema/infer.py's (``preferences.theme``,
``tags[]``, ``carts.*.total``), so a map keyed by ids is one field. ``learn_profile`` runs the
same inference (`schema infer`) over a collection and keeps ``{path: {"presence": share,
"types": {type: share of present values}}}`` - the profile that makes a type the collection never
held on a field a finding without anyone writing a rule (``type_drift``).

Pure except ``learn_profile`` (one read of at most ``limit`` documents). No failure modes beyond
the server's errors, which propagate.
"""

from __future__ import annotations

from pymongo.database import Database

from typing import Iterable

from ..schema.infer import display, infer_documents


def field_metrics(collection: str, sample: list[dict]) -> dict[str, dict]:
    n = len(sample)
    if not n:
        return {}
    inf = infer_documents(collection, sample)
    out = {}
    for path, st in inf.fields.items():
        nulls = st.types.get("null", 0)
        out[display(path)] = {"missing": round(1 - st.present / n, 6), "null": round(nulls / n, 6),
                              "types": {t: round(c / n, 6) for t, c in st.types.most_common() if t != "null"},
                              "n": {t: c for t, c in st.types.items() if t != "null"}}
    return out


def learn_profile(db: Database, collection: str, limit: int) -> tuple[int, dict[str, dict]]:
    """(documents read, profile) of at most ``limit`` documents of the collection."""
    return profile_of(collection, db[collection].find({}, batch_size=2000).limit(limit))


def profile_of(collection: str, docs: Iterable[dict]) -> tuple[int, dict[str, dict]]:
    inf = infer_documents(collection, docs)
    prof = {}
    for path, st in inf.fields.items():
        prof[display(path)] = {"presence": round(st.present / inf.docs, 6) if inf.docs else 0.0,
                               "types": {t: round(c / st.present, 6) for t, c in st.types.most_common()}}
    return inf.docs, prof


def type_drift(metrics: dict[str, dict], profile: dict[str, dict], min_share: float, min_docs: int
               ) -> list[tuple[str, str, int, float, list[str]]]:
    """(path, type, documents, share, the profile's types) for each type of a profiled field that
    the profile never saw there (or saw in under a thousandth of its values), written by at least
    ``min_docs`` sampled documents and ``min_share`` of the sample. Fields the profile lacks are
    not drift: a new field is the schema rules' business (allowed keys)."""
    out = []
    for path, m in metrics.items():
        prof = profile.get(path)
        if prof is None:
            continue
        known = {t for t, share in prof["types"].items() if share >= 0.001}
        for t, share in m["types"].items():
            docs = m["n"].get(t, 0)
            if t not in known and share >= min_share and docs >= min_docs:
                out.append((path, t, docs, share, sorted(known - {"null"})))
    return out
