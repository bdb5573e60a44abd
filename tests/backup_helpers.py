"""Shared by the backup/restore tests: small generated data and hashes."""

from __future__ import annotations

from fluxa_integrity.fluxa.generator import GenerateOptions, generate
from fluxa_integrity.mongo.hashing import database_hash


def make_data(db, users: int = 60, seed: int = 7) -> None:
    generate(db, GenerateOptions(users=users, seed=seed, secondary=False))


def hashes(db) -> dict:
    names = sorted(db.list_collection_names())
    return database_hash(db, names)


def indexes(db) -> dict:
    return {n: sorted((i["name"], tuple(i["key"].items())) for i in db[n].list_indexes())
            for n in sorted(db.list_collection_names())}
