"""Partitions inside one collection (issue 13): backup files cut into segments on document
boundaries and a server's collection cut into ``_id`` ranges, evaluated in separate processes and
merged - the findings are those of one pass, for any number of workers, at two dataset sizes."""

from __future__ import annotations

import struct
from dataclasses import replace

import bson
import pytest
from bson import ObjectId

from fluxa_integrity.backup.files import HashedWriter
from fluxa_integrity.backup.snapshot import BackupOptions, run_backup
from fluxa_integrity.checks.partitions import id_ranges, split
from fluxa_integrity.checks.runner import RunOptions, run_checks
from fluxa_integrity.checks.scan import PassSpec
from fluxa_integrity.checks.sources import FileSegment, open_backup, segments
from fluxa_integrity.fluxa.faults import inject
from fluxa_integrity.fluxa.generator import GenerateOptions, generate
from fluxa_integrity.fluxa.manifest import Manifest
from fluxa_integrity.policy import default_policy
from fluxa_integrity.store import open_store


def full(report, samples: bool = True) -> list:
    return sorted((f.rule_id, f.variant, f.count, f.affected_users, str(f.first_doc_time), str(f.last_doc_time),
                   sorted(map(str, f.ids)), repr(f.samples) if samples else None) for f in report.findings)


@pytest.mark.parametrize("users,per_kind", [(80, 2), (200, 6)])
def test_partitions_of_backup_files_find_exactly_what_one_pass_finds(mongo_uri, db, tmp_path, users, per_kind):
    policy = default_policy()
    generate(db, GenerateOptions(users=users, seed=users))
    inject(db, Manifest(tmp_path / "m.json", db.name), "all", per_kind, seed=users)
    store = open_store()
    backup = run_backup(mongo_uri, db.name, store, BackupOptions(repo=tmp_path / "repo", oplog_probe="clock"))
    files = open_backup(store, backup.id)
    # the cut is real: every big collection is split three ways, and users (with a unique rule)
    # gets its own unique-only pass
    msgs = split(PassSpec(uri="", db=db.name, collection="messages", source=files.segment("messages")), 3, 40)
    assert len(msgs.parts) == 3 and msgs.parts[1].source.start > 0
    usr = split(PassSpec(uri="", db=db.name, collection="users", rules=policy.collections["users"].rules,
                         source=files.segment("users")), 3, 20)
    assert len(usr.parts) == 3 and usr.uniques is not None
    one = run_checks(None, db.name, policy, RunOptions(keep_ids=True), files=files, baselines={})
    three = run_checks(None, db.name, policy, RunOptions(keep_ids=True, workers=3, min_partition_docs=20),
                       files=files, baselines={})
    assert one.findings and full(three) == full(one)  # samples included: the read order is the file's
    assert three.docs == one.docs


def test_id_ranges_on_a_server_find_what_one_pass_finds(mongo_uri, db, tmp_path):
    policy = default_policy()
    generate(db, GenerateOptions(users=100, seed=5))
    inject(db, Manifest(tmp_path / "m.json", db.name), "all", 2, seed=5)
    one = run_checks(mongo_uri, db.name, policy, RunOptions(keep_ids=True))
    three = run_checks(mongo_uri, db.name, policy, RunOptions(keep_ids=True, workers=3, partitions="on",
                                                              min_partition_docs=20))
    # ranges are read in _id order, not natural order: the samples may be other members
    assert one.findings and full(three, samples=False) == full(one, samples=False)
    assert three.docs == one.docs


def test_id_ranges_cover_every_document_once_whatever_its_id_type(db):
    ids = [ObjectId() for _ in range(30)] + [f"s{i}" for i in range(5)] + [7, 8.5, None]
    db.mixed.insert_many([{"_id": i} for i in ids])
    filters = id_ranges(db, "mixed", 3, 1)
    assert len(filters) == 3
    seen = [d["_id"] for f in filters for d in db.mixed.find(f)]
    assert sorted(map(repr, seen)) == sorted(map(repr, ids))


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_segments_cut_on_document_boundaries(tmp_path, compression):
    docs = [bson.encode({"_id": i, "pad": "y" * (i % 13)}) for i in range(1000)]
    offsets = {sum(len(d) for d in docs[:i]) for i in range(1001)}
    path = tmp_path / "c.bson"
    w = HashedWriter(path, compression)
    w.write(b"".join(docs))
    w.close()
    cuts = segments(str(path), compression, 4, min_docs=10)
    assert len(cuts) == 4 and cuts[0][0] == 0 and cuts[-1][1] is None
    assert all(a in offsets and (b is None or b in offsets) for a, b, _n in cuts)
    assert all(b == c for (_a, b, _n), (c, _d, _m) in zip(cuts, cuts[1:]))
    read = [d["_id"] for a, b, _n in cuts for batch in FileSegment(str(path), compression, a, b).batches(64)
            for d in batch]
    assert read == list(range(1000)) and sum(n for *_x, n in cuts) == 1000
    assert len(segments(str(path), compression, 4, min_docs=400)) == 2  # at most total / min_docs parts


def test_seekable_zstd_files_are_cut_at_frames_and_read_back_exactly(tmp_path, monkeypatch):
    """A zstd file written as documents gets a frame every FRAME_BYTES and a seek table: segments
    come from the table (no walk) and start decompressing at their own frame; a file whose table
    is damaged or missing falls back to the walk, which still names bad bytes."""
    from fluxa_integrity.backup import files as backup_files
    from fluxa_integrity.backup.files import iter_raw_documents, seek_table
    from fluxa_integrity.checks.sources import DamagedFile, frame_segments

    monkeypatch.setattr(backup_files, "FRAME_BYTES", 3000)
    docs = [bson.encode({"_id": i, "pad": "y" * (i % 41)}) for i in range(3000)]
    path = tmp_path / "c.bson.zst"
    w = HashedWriter(path, "zstd", documents=True)
    for k in range(0, len(docs), 17):  # whole documents per write, as a backup writes them
        w.write(b"".join(docs[k:k + 17]))
    w.close()
    assert [bytes(d) for d in iter_raw_documents(path, "zstd")] == docs  # any zstd reader: frames + table
    table = seek_table(path)
    assert table is not None and len(table) > 20 and table[-1][1] == sum(map(len, docs))
    offsets = {sum(len(d) for d in docs[:i]) for i in range(len(docs) + 1)}
    assert all(d in offsets for _c, d in table)  # every frame starts on a document boundary

    cut = frame_segments(str(path), "zstd", 4, min_docs=10)
    assert len(cut) == 4 and cut[0].start == 0 and cut[-1].end is None
    assert all(seg.at > 0 and (seg.at, seg.start) in table for seg in cut[1:])
    read = [d["_id"] for seg in cut for batch in seg.batches(64) for d in batch]
    assert read == list(range(3000))
    assert len(frame_segments(str(path), "zstd", 4, min_docs=1000)) == 3  # about total / min_docs parts

    spec = PassSpec(uri="", db="x", collection="c", source=FileSegment(str(path), "zstd"))
    assert [p.source for p in split(spec, 4, 10).parts] == cut

    damaged = tmp_path / "d.bson.zst"
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF  # the footer's magic: no trusted table
    damaged.write_bytes(bytes(raw))
    assert seek_table(damaged) is None and frame_segments(str(damaged), "zstd", 4, 10) is None
    walked = split(replace(spec, source=FileSegment(str(damaged), "zstd")), 4, 10).parts
    assert len(walked) == 4 and [d["_id"] for p in walked for b in p.source.batches(64) for d in b] == list(range(3000))

    # a table whose decompressed sizes lie: a segment is a run of whole frames by file offsets,
    # so the cut may be uneven or walked, never a document read twice or lost
    lying = tmp_path / "l.bson.zst"
    raw = bytearray(path.read_bytes())
    entries = len(table) - 1
    first_entry = len(raw) - 9 - 8 * entries
    c1, d1 = struct.unpack_from("<II", raw, first_entry + 8)  # frame 1: neither the first nor a cut
    struct.pack_into("<II", raw, first_entry + 8, c1, d1 + 5000)
    lying.write_bytes(bytes(raw))
    assert len(frame_segments(str(lying), "zstd", 4, 10)) == 4  # the cut is taken from the table
    parts = split(replace(spec, source=FileSegment(str(lying), "zstd")), 4, 10).parts
    assert [d["_id"] for p in parts for b in p.source.batches(64) for d in b] == list(range(3000))

    # another tool's seekable file, frames not ended on document boundaries: walked instead
    foreign = tmp_path / "f.bson.zst"
    w = HashedWriter(foreign, "zstd", documents=True)  # breaking its promise: writes cut documents
    whole = b"".join(docs)
    for k in range(0, len(whole), 1000):
        w.write(whole[k:k + 1000])
    w.close()
    assert seek_table(foreign) is not None and frame_segments(str(foreign), "zstd", 4, 10) is None
    parts = split(replace(spec, source=FileSegment(str(foreign), "zstd")), 4, 10).parts
    assert len(parts) == 4 and [d["_id"] for p in parts for b in p.source.batches(64) for d in b] == list(range(3000))

    truncated = tmp_path / "t.bson.zst"
    truncated.write_bytes(path.read_bytes()[: table[len(table) // 2][0] + 100])  # mid-frame
    assert seek_table(truncated) is None
    with pytest.raises(DamagedFile, match="t.bson.zst"):
        split(replace(spec, source=FileSegment(str(truncated), "zstd")), 4, 10)
