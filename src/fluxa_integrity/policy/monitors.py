"""What the anomaly monitors (S10, S11) and the application-log validation monitor (S12) read
from the policy: the ``monitors:`` and ``log_validation:`` sections. Both are optional; their
defaults are the decisions documented in docs/policy.md and docs/monitors.md.

Shape: ``Monitors`` (interval, training window, sensitivity, the floors that keep small numbers
from paging anyone) and ``LogValidation`` (where logs come from, which fields carry message,
operation and level, the classes of validation errors as regexes, the count that is always too
many). Bad values fail at load like every other section: a regex that does not compile is a
located problem, a duration a ValueError pydantic turns into one.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from .durations import parse_duration

#: sensitivity level -> robust z threshold (deviations of 1.4826 MAD) past which an interval is anomalous
SENSITIVITY_Z = {"low": 8.0, "medium": 6.0, "high": 4.0}


def _duration(value: str) -> str:
    parse_duration(value)
    return value


def _regex(value: str | None) -> str | None:
    if value is not None:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regular expression {value!r}: {exc}") from exc
    return value


Duration = Annotated[str, AfterValidator(_duration)]
Regex = Annotated[str | None, AfterValidator(_regex)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Monitors(_Model):
    """Volume and field-statistics anomaly monitors over the oplog, per collection and interval."""

    enabled: bool = True
    interval: Duration = "5m"  # one row per collection per interval; the service runs on this cadence
    training_window: Duration = "14d"  # history the baseline is learned from
    min_history: int = Field(12, ge=3)  # intervals of history before a metric is judged at all
    sensitivity: Literal["low", "medium", "high"] = "medium"
    z_threshold: float | None = Field(None, gt=0)  # overrides sensitivity when set
    # without seasonality only the newest intervals of the window are the baseline (a growing load)
    recent_history: int = Field(48, ge=3)
    # seasonality: the same hour of day is the baseline once that hour has history on this many days
    seasonal_min_days: int = Field(3, ge=1)
    # a volume change smaller than this many writes is never an anomaly (small collections are noisy)
    min_volume_change: int = Field(10, ge=0)
    # a stop: an interval with no inserts (updates, deletes) at all is a drop when every interval of
    # its baseline had at least this many (monitors/baseline.py); 0 turns the rule off
    silence_min: int = Field(5, ge=0)
    # a null/missing rate change smaller than this share is never an anomaly
    min_rate_change: float = Field(0.05, ge=0, le=1)
    sample_size: int = Field(500, ge=10)  # written documents sampled per collection and interval
    min_sample: int = Field(20, ge=1)  # fewer sampled documents: field statistics are not judged
    # type drift: a BSON type the learned profile never saw on a field, in at least this share of
    # the interval's sample and this many documents
    drift_min_share: float = Field(0.01, gt=0, le=1)
    drift_min_docs: int = Field(3, ge=1)
    max_catch_up: int = Field(288, ge=1)  # closed intervals one run evaluates at most (oldest dropped)
    collections: list[str] | None = None  # None: every collection of the policy
    profile_sample: int = Field(5000, ge=100)  # documents `monitor baseline --learn` reads per collection

    @property
    def interval_delta(self) -> timedelta:
        return parse_duration(self.interval)

    @property
    def training_delta(self) -> timedelta:
        return parse_duration(self.training_window)

    @property
    def z(self) -> float:
        return self.z_threshold if self.z_threshold is not None else SENSITIVITY_Z[self.sensitivity]

    @model_validator(mode="after")
    def _windows(self):
        if self.training_delta < self.interval_delta * self.min_history:
            raise ValueError(f"training_window {self.training_window} holds fewer than min_history "
                             f"({self.min_history}) intervals of {self.interval}")
        return self


class LogErrorClass(_Model):
    """A kind of validation error: an entry belongs to it when every regex given matches (search,
    case-sensitive unless the pattern says ``(?i)``) the entry's field."""

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    message: Regex = None
    operation: Regex = None
    level: Regex = None

    @model_validator(mode="after")
    def _something(self):
        if not (self.message or self.operation or self.level):
            raise ValueError(f"class {self.name!r} matches every entry: give message, operation or level")
        return self


class LogFields(_Model):
    message: str = "message"
    operation: str = "operation"
    level: str = "level"
    time: str = "timestamp"
    collection: str | None = "collection"  # names the data collection an error is about, when the app logs it


def _default_classes() -> list[LogErrorClass]:
    return [
        LogErrorClass(name="schema_validation",
                      message=r"(?i)document failed validation|schema validation|validation ?error|failed validation"),
        LogErrorClass(name="type_mismatch",
                      message=r"(?i)cast ?error|type ?error|invalid type|expected (type )?\w+,? (but )?(got|received)"),
        LogErrorClass(name="missing_field",
                      message=r"(?i)(required|missing) (field|property|path|key)|is required"),
        LogErrorClass(name="invalid_reference",
                      message=r"(?i)(dangling|orphan(ed)?|unknown|invalid) (reference|ref|foreign key)"),
    ]


class LogValidation(_Model):
    """Validation errors in the application's logs (S12): the log collection and JSON-lines files."""

    enabled: bool = True
    collection: str | None = "logs"  # in the application database; None: files only
    files: list[str] = Field(default_factory=list)  # JSON-lines files, one entry per line
    fields: LogFields = Field(default_factory=LogFields)
    classes: list[LogErrorClass] = Field(default_factory=_default_classes)
    # this many errors of one class in one interval is a finding whatever the history says
    threshold: int = Field(20, ge=1)
    # a jump against the baseline (the monitors' sensitivity) needs at least this many errors
    min_jump: int = Field(5, ge=1)

    @model_validator(mode="after")
    def _unique(self):
        names = [c.name for c in self.classes]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate log error class {dup[0]!r}")
        return self
