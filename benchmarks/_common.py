"""Helpers shared by the benchmarks: the physical limit (a plain cursor drain) and peak RSS."""

from __future__ import annotations

import resource
import time

from bson.raw_bson import RawBSONDocument
from pymongo.database import Database


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def drain(db: Database, name: str, raw: bool = True, batch_size: int = 5000) -> dict:
    """Read every document of a collection and do nothing with it: the rate any scanner is held to."""
    coll = db[name]
    if raw:
        coll = coll.with_options(codec_options=db.codec_options.with_options(document_class=RawBSONDocument))
    t0 = time.perf_counter()
    n = nbytes = 0
    for doc in coll.find({}, batch_size=batch_size):
        n += 1
        if raw:
            nbytes += len(doc.raw)
    secs = time.perf_counter() - t0
    return {"collection": name, "docs": n, "seconds": round(secs, 2), "docs_per_s": round(n / secs),
            "mb_per_s": round(nbytes / secs / 1e6, 1) if raw else None, "mb": round(nbytes / 1e6, 1) if raw else None}
