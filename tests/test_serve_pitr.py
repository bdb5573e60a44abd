"""Issue 11, acceptance item 2, short: with `serve` up, a chat-like load and a `fluxa generate` of more
documents than the dev server's oplog cap, a point-in-time restore to each of 3 moments (one inside
the generate) equals the copy taken at that moment, document by document.

The same code as the 10-minute soak (benchmarks/soak_serve_pitr.py, numbers in docs/performance.md),
on a 30-second run: its own FerretDB with a 500-entry oplog cap and --oplog-keep 100, `serve
--time-scale 3600` with the jobs that write backups and the archive, and a generate of about 2,400
documents into a second database that pauses itself past 1.5x the cap for its moment. Against the
dev server before its commit-order fix (docs/local-server.md) this run restored the moments during
and after the generate without 9 of its documents (a late insert batch the archiver never saw); it
takes about 55 s on an idle machine. Readiness signals only: serve's "serving" line, the first full backup in the catalog, the generate's
"paused" line, serve's exit.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from conftest import EXTERNAL_URI

SOAK = Path(__file__).resolve().parents[1] / "benchmarks" / "soak_serve_pitr.py"


def _soak():
    """The soak script as a module (benchmarks/ is not a package)."""
    if "soak_serve_pitr" not in sys.modules:
        spec = importlib.util.spec_from_file_location("soak_serve_pitr", SOAK)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod  # dataclasses look their module up while the class is made
        spec.loader.exec_module(mod)
    return sys.modules["soak_serve_pitr"]


def test_compare_finds_a_missing_a_changed_and_an_extra_document():
    soak = _soak()
    copy = {"c": {"1": "a", "2": "b"}, "d": {"x": "y"}}
    assert soak.compare(copy, {"c": {"1": "a", "2": "b"}, "d": {"x": "y"}}) == {}
    diff = soak.compare(copy, {"c": {"1": "a", "2": "B", "3": "c"}})
    assert diff == {"c": {"missing": 0, "extra": 1, "changed": 1, "samples": ["3", "2"]},
                    "d": {"missing": 1, "extra": 0, "changed": 0, "samples": ["x"]}}


@pytest.mark.skipif(bool(EXTERNAL_URI), reason="the soak starts a FerretDB of its own (its oplog cap and guards)")
def test_point_in_time_restores_equal_copies_taken_while_serve_runs(tmp_path, ferretdb_binary):
    soak = _soak()
    cap = 500  # the generate writes about 4.8 times as many documents
    cfg = soak.Config(minutes=0.5, moments=3, rate=20, users=5, oplog_entries=cap, oplog_keep=100,
                      generate_users=16, time_scale=3600, slice_seconds=1,
                      only="backup-full,backup-incremental,oplog-archiver,retention",
                      workdir=tmp_path / "soak", log=lambda msg: None)
    res = soak.run(cfg)

    moments = res["moments"]
    assert len(moments) == 3
    bad = [m for m in moments if not m["equal"]]
    assert bad == [], f"restores that differ from their copy: {bad}"
    during = [m for m in moments if m["during_generate"]]
    assert len(during) == 1
    final_bulk = res["load"]["generate"]["documents"]
    assert res["load"]["generate"]["exit"] == 0 and final_bulk > 2 * cap
    # the moment inside the generate: more than the cap written, and the generate wrote on after it
    # (its insert batches hold up to 5,000 documents, so how far it got varies; at least its
    # completion mark came later)
    assert during[0]["bulk_documents"] > cap and during[0]["bulk_replayed"] < moments[-1]["bulk_replayed"]
    # the restore after the generate replayed every one of its entries from the archive
    last = moments[-1]
    # entries: the generated documents plus the insert and the update of its `_fluxa_meta` marker;
    # documents: those plus the meta document and the soak's own marker (in the snapshot)
    assert last["bulk_documents"] == final_bulk and last["bulk_replayed"] == final_bulk
    assert all(m["app_documents"] > 0 and m["app_replayed"] > 0 for m in moments)
    assert res["gaps"] == {"catalog": [], "oplog_status_exit": 0, "oplog_status_gaps": []}
    assert res["serve"]["exit"] == 0 and res["serve"]["tracebacks"] == 0 and res["serve"]["gap_lines"] == []
    assert res["archiver_lag_s"]["slices"] > 0
    assert res["load"]["writes"] > 0
    assert res["ok"] is True
