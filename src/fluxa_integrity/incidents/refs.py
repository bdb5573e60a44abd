"""Resolving the backup and restore ids an incident is linked to, against the state store.

Every id a command is given must exist: ``backups`` resolves each id (or unique prefix, as
``backup show`` does) to the catalog's full id; ``restores`` accepts a restore run id (a number,
printed by ``restore run``) or a promotion id (a recovery plan id since promotions became plans;
an older promotion's id too). Failure: FluxaError naming the unknown id and where to list
the real ones; nothing is written by the caller then.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..errors import FluxaError
from ..store.backup_models import Backup, Promotion, RestoreRun
from ..store.recovery_models import RecoveryPlan


def backups(s: Session, ids: list[str]) -> list[str]:
    out = []
    for given in ids:
        bid = str(given).strip()
        row = s.get(Backup, bid) if bid else None
        if row is None and bid:
            rows = list(s.scalars(select(Backup).where(Backup.id.like(f"{bid}%")).limit(3)))
            if len(rows) > 1:
                raise FluxaError(f"backup prefix {given!r} matches several backups "
                                 f"({', '.join(r.id for r in rows[:2])}, ...)", "give more of the id")
            row = rows[0] if rows else None
        if row is None:
            raise FluxaError(f"no backup {given!r} in the catalog", "list them with `fluxa-integrity backup list`")
        out.append(row.id)
    return out


def restores(s: Session, ids: list[str]) -> list[str]:
    out = []
    for given in ids:
        rid = str(given).strip()
        if rid.isdigit() and s.get(RestoreRun, int(rid)) is not None:
            out.append(rid)
        elif rid and (s.get(RecoveryPlan, rid) is not None or s.get(Promotion, rid) is not None):
            out.append(rid)
        else:
            raise FluxaError(f"no restore or promotion {given!r}",
                             "a restore run id (printed by `fluxa-integrity restore run`) or a promotion id "
                             "(printed by `restore promote --apply`)")
    return out
