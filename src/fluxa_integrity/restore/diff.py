"""`restore diff`: a restored target database against the live one, per collection.

Seen from the live database: ``added`` = in live, not in the backup (created since),
``removed`` = in the backup, not in live (deleted since), ``changed`` = in both, different bytes.
``conflicts`` = live documents, added or changed, whose time field (the policy's
``watermark_field`` of the collection, or ``--time-field``) is later than the backup's end:
bringing the backup's version back would undo a change made after the backup.
"""

from __future__ import annotations

from datetime import datetime, timezone

from pymongo.database import Database

from ..policy.models import Policy
from .compare import fingerprints

UTC = timezone.utc


def _aware(v):
    if isinstance(v, datetime) and v.tzinfo is None:
        return v.replace(tzinfo=UTC)
    return v


def diff_collection(live: Database, target: Database, name: str, since: datetime | None, time_field: str | None,
                    samples: int = 5) -> dict:
    getter = (lambda d: d.get(time_field)) if time_field else None
    theirs = fingerprints(live, name, getter)
    ours = fingerprints(target, name)
    added = [k for k in theirs if k not in ours]
    removed = [k for k in ours if k not in theirs]
    changed = [k for k in theirs if k in ours and theirs[k][1] != ours[k][1]]
    conflicts = []
    if since is not None and time_field:
        for k in added + changed:
            t = _aware(theirs[k][2])
            if isinstance(t, datetime) and t > since:
                conflicts.append(k)
    sample = lambda keys, src: [src[k][0] for k in keys[:samples]]  # noqa: E731
    return {"live_count": len(theirs), "backup_count": len(ours),
            "added": len(added), "removed": len(removed), "changed": len(changed), "conflicts": len(conflicts),
            "samples": {"added": sample(added, theirs), "removed": sample(removed, ours),
                        "changed": sample(changed, theirs), "conflicts": sample(conflicts, theirs)},
            "time_field": time_field}


def diff_databases(live: Database, target: Database, collections: list[str], policy: Policy | None,
                   since: datetime | None, time_field: str | None = None, samples: int = 5) -> dict:
    out = {}
    for name in collections:
        field = time_field or (policy.collections[name].watermark_field
                               if policy and name in policy.collections else None)
        out[name] = diff_collection(live, target, name, since, field, samples)
    return out
