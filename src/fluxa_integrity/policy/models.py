"""The playbook as data: one ``Policy`` validated at load (pydantic v2).

Every model forbids unknown keys so a typo fails loudly instead of silently meaning "default".
Checks that span sections (rule ids unique, collections that rules point at, roles, severity
levels) raise ``PolicyProblems``, which carries a location per problem so the loader can point
at the offending line of the YAML file.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Iterable, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from .automation import AutoIncidents, EnhancedMonitoring
from .data_loss import Reconstruct, Undelete
from .durations import parse_duration
from .migrations import Migration
from .monitors import LogValidation, Monitors
from .rules import (RULE_CATEGORIES, CounterRule, CopiedFieldRule, DeletionsRule, MigrationRule, ReferenceRule, Rule,
                    TimestampOrderRule)

Loc = tuple[str | int, ...]


class PolicyProblems(ValueError):
    """Several problems, each with a location relative to the model that raised it."""

    def __init__(self, problems: list[tuple[Loc, str]]):
        self.problems = problems
        super().__init__("; ".join(f"{dotted(loc)}: {msg}" for loc, msg in problems))


def dotted(loc: Loc) -> str:
    """``("collections", "users", "rules", 3)`` -> ``collections.users.rules[3]``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _duration(value: str) -> str:
    parse_duration(value)  # raises ValueError with the expected forms
    return value


Duration = Annotated[str, AfterValidator(_duration)]
Criticality = Literal["critical", "high", "medium", "low"]
Frequency = Literal["continuous", "hourly", "daily", "weekly", "monthly"]
CheckCategory = Literal["schema", "referential", "consistency", "data_loss", "corruption", "sync",
                        "backup_verification"]
# Every rule category must be schedulable; backup_verification is a check without rules.
assert set(RULE_CATEGORIES) <= set(get_args(CheckCategory))
BackupKind = Literal["full", "incremental", "point_in_time", "schema"]
# Checklist steps the tool can carry out itself; the incident engine maps each name to code.
Action = Literal["preserve_evidence", "read_only_mode", "pause_features", "first_communication",
                 "verify_backups", "run_checks", "progress_communication", "lift_read_only",
                 "resume_features", "enhanced_monitoring", "resolution_communication"]
Slug = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- data classes (appendix: criticality, RTO, RPO) -------------------------------------------

class Cover(_Model):
    """A collection, or some of its fields (dotted paths), that belong to a data class."""

    collection: str = Field(min_length=1)
    fields: list[str] = Field(default_factory=list)  # empty: the whole collection

    def specificity(self, collection: str, field: str | None) -> int | None:
        """How closely this cover matches; None when it does not. Whole collection = 0, a
        field cover = its depth (``preferences`` = 1), so field covers win."""
        if collection != self.collection:
            return None
        if not self.fields:
            return 0
        if field is None:
            return None
        depths = [f.count(".") + 1 for f in self.fields if field == f or field.startswith(f + ".")]
        return max(depths, default=None)


class DataClass(_Model):
    name: Slug
    title: str
    criticality: Criticality
    recovery_priority: int = Field(ge=1)
    backup_frequency: Literal["hourly", "daily", "weekly", "monthly"]
    retention: Duration
    rto: Duration
    rpo: Duration
    rto_note: str = ""
    rpo_note: str = ""
    covers: list[Cover] = Field(default_factory=list)

    @property
    def retention_delta(self) -> timedelta:
        return parse_duration(self.retention)

    @property
    def rto_delta(self) -> timedelta:
        return parse_duration(self.rto)

    @property
    def rpo_delta(self) -> timedelta:
        return parse_duration(self.rpo)


# --- schedules (appendix: integrity checks, backups) ------------------------------------------

class CheckSchedule(_Model):
    title: str
    frequency: Frequency
    description: str = ""
    action_on_failure: str = Field(min_length=1)


class BackupSchedule(_Model):
    title: str
    frequency: Literal["continuous", "hourly", "daily", "weekly", "monthly", "on_change"]
    retention: Duration | None  # null: kept indefinitely
    verification: Literal["automatic", "on_change", "hourly", "daily", "weekly", "monthly"]


# --- severity, clocks, escalation --------------------------------------------------------------

class SeverityRule(_Model):
    level: str
    when_criticality_in: list[Criticality] = Field(min_length=1)


class Severity(_Model):
    """``default`` unless a rule matches (first match wins): a rule matches when any affected
    data class has one of its criticalities."""

    levels: dict[str, str] = Field(min_length=1)  # level -> label, most severe first
    default: str
    rules: list[SeverityRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _known_levels(self):
        problems = [(("default",), f"unknown level {self.default!r}; levels: {', '.join(self.levels)}")
                    ] if self.default not in self.levels else []
        problems += [(("rules", i, "level"), f"unknown level {r.level!r}; levels: {', '.join(self.levels)}")
                     for i, r in enumerate(self.rules) if r.level not in self.levels]
        if problems:
            raise PolicyProblems(problems)
        return self

    def level_for(self, criticalities: Iterable[str]) -> str:
        found = set(criticalities)
        return next((r.level for r in self.rules if found & set(r.when_criticality_in)), self.default)

    def label(self, level: str) -> str:
        return self.levels[level]


class Clocks(_Model):
    acknowledge: Duration  # respond (acknowledge and begin) within
    resolve: Duration  # resolution target
    warn_before: Duration  # warn this long before a clock runs out

    @model_validator(mode="after")
    def _ordered(self):
        if not parse_duration(self.acknowledge) <= parse_duration(self.resolve):
            raise PolicyProblems([(("resolve",), "must not be shorter than acknowledge")])
        if not parse_duration(self.warn_before) < parse_duration(self.acknowledge):
            raise PolicyProblems([(("warn_before",), "must be shorter than acknowledge")])
        return self

    @property
    def acknowledge_delta(self) -> timedelta:
        return parse_duration(self.acknowledge)

    @property
    def resolve_delta(self) -> timedelta:
        return parse_duration(self.resolve)

    @property
    def warn_before_delta(self) -> timedelta:
        return parse_duration(self.warn_before)


class EscalationTrigger(_Model):
    """Notify ``notify`` when the incident opens or misses a clock; ``severity`` limits the
    trigger to incidents at those levels (None: any)."""

    when: Literal["opened", "acknowledge_missed", "resolve_missed"]
    notify: str
    severity: list[str] | None = None


class Escalation(_Model):
    path: list[str] = Field(min_length=1)  # in order; the first is the default owner
    triggers: list[EscalationTrigger] = Field(default_factory=list)

    def triggered(self, when: str, severity: str) -> list[str]:
        """Roles to notify for event ``when`` of an incident at ``severity``, in path order."""
        roles = {t.notify for t in self.triggers
                 if t.when == when and (t.severity is None or severity in t.severity)}
        return [role for role in self.path if role in roles]


# --- response phases and templates -------------------------------------------------------------

class ChecklistItem(_Model):
    id: Slug
    text: str
    owner: str  # default owner role; the incident can reassign
    action: Action | None = None  # set when the tool can do the step itself


class Step(_Model):
    title: str
    items: list[ChecklistItem] = Field(min_length=1)


class Phase(_Model):
    id: Slug
    name: str
    start: Duration  # window, from the incident's opening
    end: Duration
    steps: list[Step] = Field(min_length=1)

    @model_validator(mode="after")
    def _window(self):
        if parse_duration(self.start) >= parse_duration(self.end):
            raise PolicyProblems([(("end",), f"the window must end after it starts ({self.start})")])
        return self

    @property
    def items(self) -> list[ChecklistItem]:
        return [item for step in self.steps for item in step.items]

    @property
    def start_delta(self) -> timedelta:
        return parse_duration(self.start)

    @property
    def end_delta(self) -> timedelta:
        return parse_duration(self.end)


class Template(_Model):
    title: str
    text: str  # placeholders like [CURRENT_TIME] are filled at publication

    def fill(self, **values: str) -> str:
        """Replace ``[NAME]`` for each given NAME; other placeholders stay visible."""
        text = self.text
        for name, value in values.items():
            text = text.replace(f"[{name}]", str(value))
        return text


class Templates(_Model):
    initial: Template
    progress: Template
    resolution: Template


# --- rules per collection ----------------------------------------------------------------------

class CollectionPolicy(_Model):
    description: str = ""
    # whose data a document is: findings count affected users by it ("_id" on a users collection)
    user_field: str | None = "userId"
    # a date set on every insert/update: `check run --incremental` reads only documents past the
    # highest value the last run saw (none: the collection is always read whole)
    watermark_field: str | None = None
    rules: list[Rule] = Field(default_factory=list)
    # data-loss recipes (data_loss.py): rebuilding from logs (S26), undelete's cascade (S28)
    reconstruct: Reconstruct | None = None
    undelete: Undelete = Field(default_factory=Undelete)


# --- the policy ----------------------------------------------------------------------------------

class Policy(_Model):
    version: Literal[1] = 1
    application: str = ""
    roles: list[str] = Field(min_length=1)
    data_classes: list[DataClass] = Field(min_length=1)
    check_schedule: dict[CheckCategory, CheckSchedule]
    backup: dict[BackupKind, BackupSchedule]
    severity: Severity
    clocks: Clocks
    escalation: Escalation
    phases: list[Phase] = Field(min_length=1)
    templates: Templates
    collections: dict[str, CollectionPolicy]
    # declared schema migrations (migrations.py): what the `migrate` recipe applies or rolls back
    migrations: list[Migration] = Field(default_factory=list)
    # anomaly monitors (S10, S11) and validation errors in application logs (S12): monitors.py
    monitors: Monitors = Field(default_factory=Monitors)
    log_validation: LogValidation = Field(default_factory=LogValidation)
    # what the service opens and watches by itself (issue 11): automation.py
    auto_incidents: AutoIncidents = Field(default_factory=AutoIncidents)
    enhanced_monitoring: EnhancedMonitoring = Field(default_factory=EnhancedMonitoring)

    @model_validator(mode="after")
    def _consistent(self):
        problems = _cross_check(self)
        if problems:
            raise PolicyProblems(problems)
        return self

    # lookups used by the rest of the tool

    def data_class(self, name: str) -> DataClass:
        for dc in self.data_classes:
            if dc.name == name:
                return dc
        raise KeyError(f"no data class {name!r}")

    def data_class_for(self, collection: str, field: str | None = None) -> DataClass | None:
        """The most specific class covering ``collection`` (or ``collection.field``); None when
        uncovered. A field cover (users.preferences) beats the whole-collection cover (users)."""
        best, best_score = None, -1
        for dc in self.data_classes:
            for cover in dc.covers:
                score = cover.specificity(collection, field)
                if score is not None and score > best_score:
                    best, best_score = dc, score
        return best

    def severity_for(self, affected: Iterable[tuple[str, str | None]]) -> str:
        """Severity level of an incident touching these (collection, field) places."""
        classes = (self.data_class_for(c, f) for c, f in affected)
        return self.severity.level_for(dc.criticality for dc in classes if dc is not None)

    def iter_rules(self, collection: str | None = None) -> Iterable[tuple[str, Rule]]:
        for name, coll in self.collections.items():
            if collection is None or name == collection:
                for rule in coll.rules:
                    yield name, rule

    def rule(self, rule_id: str) -> Rule:
        for _, rule in self.iter_rules():
            if rule.id == rule_id:
                return rule
        raise KeyError(f"no rule {rule_id!r}")

    def migration(self, migration_id: str) -> Migration:
        for mig in self.migrations:
            if mig.id == migration_id:
                return mig
        raise KeyError(f"no migration {migration_id!r}")

    def checklist(self) -> list[tuple[Phase, ChecklistItem]]:
        return [(phase, item) for phase in self.phases for item in phase.items]


# Rule attributes naming another collection of the same database (sync rules name another database).
_COLLECTION_REFS = {ReferenceRule: "to", CounterRule: "child_collection", TimestampOrderRule: "parent_collection",
                    CopiedFieldRule: "parent_collection", DeletionsRule: "audit_collection"}


def _cross_check(p: Policy) -> list[tuple[Loc, str]]:
    """Everything one section can't check alone. Locations are relative to the policy root."""
    problems: list[tuple[Loc, str]] = []
    known_colls = ", ".join(p.collections) or "(none)"

    def unique(loc: Loc, value: str, seen: dict[str, Loc], what: str) -> None:
        if value in seen:
            problems.append((loc, f"duplicate {what} {value!r} (also at {dotted(seen[value])})"))
        else:
            seen[value] = loc

    def known_collection(loc: Loc, name: str | None) -> None:
        if name is not None and name not in p.collections:
            problems.append((loc, f"unknown collection {name!r}; the policy's collections: {known_colls}"))

    names: dict[str, Loc] = {}
    covered: dict[str, Loc] = {}
    for i, dc in enumerate(p.data_classes):
        unique(("data_classes", i, "name"), dc.name, names, "data class")
        for j, cover in enumerate(dc.covers):
            loc = ("data_classes", i, "covers", j)
            known_collection(loc + ("collection",), cover.collection)
            for f in cover.fields or [None]:
                unique(loc, cover.collection + (f".{f}" if f else ""), covered, "cover")

    rule_ids: dict[str, Loc] = {}
    for coll, cp in p.collections.items():
        if cp.reconstruct is not None:
            known_collection(("collections", coll, "reconstruct", "log_collection"), cp.reconstruct.log_collection)
        for k, rule in enumerate(cp.rules):
            loc = ("collections", coll, "rules", k)
            unique(loc + ("id",), rule.id, rule_ids, "rule id")
            if rule.category not in p.check_schedule:
                problems.append((loc, f"rule category {rule.category!r} has no entry in check_schedule"))
            attr = _COLLECTION_REFS.get(type(rule))
            if attr:
                known_collection(loc + (attr,), getattr(rule, attr))
            if isinstance(rule, CopiedFieldRule) and rule.parent_collection == coll:
                # the scanner reads a parent's values from an earlier pass over another collection
                problems.append((loc + ("parent_collection",), "a copied_field rule cannot point at its own "
                                 "collection (timestamp_order can)"))
            if isinstance(rule, DeletionsRule):
                try:
                    parse_duration(rule.lookback)
                except ValueError as exc:
                    problems.append((loc + ("lookback",), str(exc)))

    migration_ids: dict[str, Loc] = {}
    for i, mig in enumerate(p.migrations):
        loc = ("migrations", i)
        unique(loc + ("id",), mig.id, migration_ids, "migration id")
        known_collection(loc + ("collection",), mig.collection)
        for j, step in enumerate(mig.steps):
            child = getattr(step, "count_children", None)
            if child is not None:
                known_collection(loc + ("steps", j, "count_children", "collection"), child.collection)
        if mig.rule is not None:
            found = next((r for c, r in p.iter_rules(mig.collection) if r.id == mig.rule), None)
            if not isinstance(found, MigrationRule):
                problems.append((loc + ("rule",), f"no migration rule {mig.rule!r} on collection {mig.collection!r}"))

    for i, name in enumerate(p.monitors.collections or []):
        known_collection(("monitors", "collections", i), name)

    roles = set(p.roles)
    for i, role in enumerate(p.escalation.path):
        if role not in roles:
            problems.append((("escalation", "path", i), f"unknown role {role!r}; roles: {', '.join(p.roles)}"))
    for i, trig in enumerate(p.escalation.triggers):
        if trig.notify not in p.escalation.path:
            problems.append((("escalation", "triggers", i, "notify"),
                             f"{trig.notify!r} is not on the escalation path ({', '.join(p.escalation.path)})"))
        for j, level in enumerate(trig.severity or []):
            if level not in p.severity.levels:
                problems.append((("escalation", "triggers", i, "severity", j),
                                 f"unknown severity level {level!r}; levels: {', '.join(p.severity.levels)}"))

    phase_ids: dict[str, Loc] = {}
    item_ids: dict[str, Loc] = {}
    previous_end = timedelta()
    for i, phase in enumerate(p.phases):
        unique(("phases", i, "id"), phase.id, phase_ids, "phase id")
        if phase.start_delta < previous_end:
            problems.append((("phases", i, "start"), "overlaps the previous phase; phases are in time order"))
        previous_end = phase.end_delta
        for j, step in enumerate(phase.steps):
            for k, item in enumerate(step.items):
                loc = ("phases", i, "steps", j, "items", k)
                unique(loc + ("id",), item.id, item_ids, "checklist item id")
                if item.owner not in roles:
                    problems.append((loc + ("owner",), f"unknown role {item.owner!r}; roles: {', '.join(p.roles)}"))
    return problems
