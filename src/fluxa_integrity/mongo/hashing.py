"""Content hashes of collections that do not depend on the order documents come back in.

Each document's raw BSON bytes are hashed with SHA-256 and the digests are added modulo
2**256 (a multiset hash). No sort is needed, so a hash streams at cursor speed, partitions can
be hashed apart and combined, and a restored copy hashes equal to its source exactly when it
holds the same documents with the same field order and types.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from bson.raw_bson import RawBSONDocument
from pymongo.database import Database

MOD = 1 << 256


@dataclass
class CollectionDigest:
    count: int = 0
    acc: int = 0

    def add_raw(self, raw: bytes) -> None:
        self.count += 1
        self.acc = (self.acc + int.from_bytes(hashlib.sha256(raw).digest(), "big")) % MOD

    def combine(self, other: "CollectionDigest") -> "CollectionDigest":
        return CollectionDigest(self.count + other.count, (self.acc + other.acc) % MOD)

    @property
    def hexdigest(self) -> str:
        return f"{self.acc:064x}"


def collection_digest(db: Database, name: str, batch_size: int = 5000) -> CollectionDigest:
    digest = CollectionDigest()
    coll = db.get_collection(name).with_options(codec_options=db.codec_options.with_options(document_class=RawBSONDocument))
    for doc in coll.find({}, batch_size=batch_size):
        digest.add_raw(doc.raw)
    return digest


def database_hash(db: Database, collections: list[str] | None = None) -> dict[str, dict]:
    """Per-collection ``{count, sha256}`` plus a combined ``"*"`` entry over all of them."""
    names = sorted(collections if collections is not None else db.list_collection_names())
    out: dict[str, dict] = {}
    overall = hashlib.sha256()
    for name in names:
        d = collection_digest(db, name)
        out[name] = {"count": d.count, "sha256": d.hexdigest}
        overall.update(f"{name}:{d.count}:{d.hexdigest}\n".encode())
    out["*"] = {"count": sum(v["count"] for v in out.values()), "sha256": overall.hexdigest()}
    return out
