"""What the service does on its own about findings and resolved incidents: the policy's
``auto_incidents:`` and ``enhanced_monitoring:`` sections (issue 11, items 5 and 6; S13, S32).

Shape: ``AutoIncidents`` - which findings open (or join) an incident without a person: at least
``min_criticality`` (the finding's data class; a finding with no class counts as
``unclassified_as``) and at least ``min_count`` documents. ``EnhancedMonitoring`` - for ``period``
after an incident resolves, its collections' rules run every ``checks_every``. Both optional; the
defaults are the decisions documented in docs/service.md. Bad values fail at load like every other
section (a duration pydantic cannot parse is a located problem).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from .durations import parse_duration

Criticality = Literal["critical", "high", "medium", "low"]
RANK = {"critical": 0, "high": 1, "medium": 2, "low": 3}


def _duration(value: str) -> str:
    parse_duration(value)
    return value


Duration = Annotated[str, AfterValidator(_duration)]


class AutoIncidents(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    # medium and above page: a low-criticality class (analytics) is recorded, a person takes it in
    min_criticality: Criticality = "medium"
    unclassified_as: Criticality = "medium"  # a finding outside every data class (monitors, new collections)
    min_count: int = Field(1, ge=1)

    def wants(self, criticality: str | None, count: int) -> bool:
        level = criticality or self.unclassified_as
        return RANK.get(level, 3) <= RANK[self.min_criticality] and count >= self.min_count


class EnhancedMonitoring(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    period: Duration = "7d"
    checks_every: Duration = "1h"

    @property
    def period_delta(self) -> timedelta:
        return parse_duration(self.period)

    @property
    def every_delta(self) -> timedelta:
        return parse_duration(self.checks_every)
