"""Backup verification on the files (S4): right after a full backup is taken, its files are
checked where they lie - no server, no restore - and the verdict is recorded like a drill's.

What is checked: every file's sha256 against the manifest, every document framed and decoded
(the policy's collections by the check run itself, the others by a walk over their length
prefixes), each collection's document count against the manifest, and the policy's rules
evaluated on the files (checks/sources.py). The verdict is about the backup being whole and
readable: checksums, framing and counts. Integrity findings are reported with it and do not fail
it (a faithful backup of bad data is still a faithful backup), as with `backup verify`.

Shape: a ``verifications`` row with ``restore_seconds`` empty (a files check measures no RTO:
restore drills, `backup verify`, remain the RTO evidence) and ``details.kind = "files"``; a pass
marks the backup ``verified``, a fail takes ``verified`` back to ``complete``.

Failure behaviour: a damaged file (checksum, truncation, corrupt BSON) is a ``fail`` verdict
naming the file and the byte offset; the backup itself stays as it was written.
"""

from __future__ import annotations

import time

from ..checks.runner import RunOptions, run_checks
from ..checks.sources import BackupFiles, DamagedFile, baselines_before, open_backup, segments
from ..errors import FluxaError
from ..policy.models import Policy
from ..store import Store
from . import catalog


def check_backup_files(store: Store, backup_id: str, policy: Policy, workers: int = 1) -> dict:
    """Check a full backup's files, record the verdict; returns the verification as a dict."""
    row = catalog.get_backup(store, backup_id)
    t0 = time.perf_counter()
    details: dict = {"kind": "files", "problems": [], "collections": {}, "warnings": []}
    try:
        files = open_backup(store, row.id)
        details.update(_check(store, files, policy, workers, row))
    except FluxaError as exc:
        details["problems"].append(exc.message)
    details["seconds"] = round(time.perf_counter() - t0, 3)
    verdict = "fail" if details["problems"] else "pass"
    vid = catalog.record_verification(store, row.id, verdict, {}, details)
    return {"verification_id": vid, "backup_id": row.id, "verdict": verdict, **details}


def _check(store: Store, files: BackupFiles, policy: Policy, workers: int, row) -> dict:
    out: dict = {"problems": [], "collections": {}, "warnings": []}
    checked = sorted(c for c in files.collections() if c in policy.collections)
    docs: dict[str, int] = {}
    if checked:
        try:
            report = run_checks(None, row.db, policy, RunOptions(collections=checked, workers=workers),
                                baselines=baselines_before(store, row.db, row.started_at), files=files)
        except DamagedFile:
            raise
        except FluxaError as exc:  # the policy's problem, not the backup's: said, not failed
            out["integrity_checks_error"] = exc.message
        else:
            docs.update(report.docs)
            out["warnings"] = report.warnings
            out["integrity_findings"] = [{"rule_id": f.rule_id, "variant": f.variant, "count": f.count}
                                         for f in report.findings]
    for name in sorted(files.collections()):
        if name not in docs:  # not read by a rule: at least framed and counted
            path, comp = files.files[name]
            docs[name] = sum(n for _a, _b, n in segments(str(path), comp, 1))
        expected = files.count(name)
        out["collections"][name] = {"count": docs[name], "expected_count": expected}
        if docs[name] != expected:
            out["problems"].append(f"{name}: {docs[name]} documents in its file, the manifest says {expected}")
    return out
