"""The playbook as data: the default policy reproduces the playbook, and a bad policy file fails
with the file, line and what was expected. Pure unit tests plus the CLI; no server needed."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest

from fluxa_integrity.errors import FluxaError
from fluxa_integrity.policy import (PolicyError, Policy, default_policy, format_duration, load_policy,
                                    parse_duration, parse_policy)
from fluxa_integrity.policy.loader import default_policy_text

PLAYBOOK = Path(__file__).resolve().parents[1] / ".." / "shared" / "spec" / "data-integrity-playbook.md"


@pytest.fixture(scope="module")
def policy() -> Policy:
    return default_policy()


def _playbook() -> str:
    if not PLAYBOOK.is_file():
        pytest.skip(f"playbook not found at {PLAYBOOK}")
    return PLAYBOOK.read_text()


# --- the default policy is the playbook ---------------------------------------------------------

def test_data_classes_match_the_appendix(policy):
    # Data Criticality Classification + RTO + RPO tables, row by row.
    expected = [
        ("user_accounts", "User Accounts", "critical", 1, "daily", timedelta(days=90), timedelta(hours=1),
         timedelta(minutes=15)),
        ("chat_history", "Chat History", "high", 2, "daily", timedelta(days=30), timedelta(hours=4),
         timedelta(hours=1)),
        ("user_preferences", "User Preferences", "medium", 3, "weekly", timedelta(days=30), timedelta(hours=8),
         timedelta(hours=24)),
        ("usage_analytics", "Usage Analytics", "low", 4, "monthly", timedelta(days=90), timedelta(hours=24),
         timedelta(hours=48)),
    ]
    actual = [(dc.name, dc.title, dc.criticality, dc.recovery_priority, dc.backup_frequency, dc.retention_delta,
               dc.rto_delta, dc.rpo_delta) for dc in policy.data_classes]
    assert actual == expected
    assert [dc.rto_note for dc in policy.data_classes] == [
        "Critical for authentication", "Important for user experience", "Affects UI but not critical",
        "Used for reporting only"]
    assert [dc.rpo_note for dc in policy.data_classes] == [
        "Minimal acceptable data loss", "Some recent messages may be lost", "Recent preference changes may be lost",
        "Some analytics data may be lost"]


def test_data_class_covers(policy):
    covers = {dc.name: [(c.collection, c.fields) for c in dc.covers] for dc in policy.data_classes}
    assert covers == {
        "user_accounts": [("users", []), ("auditLog", [])],
        "chat_history": [("conversations", []), ("messages", []), ("logs", [])],
        "user_preferences": [("users", ["preferences"])],
        "usage_analytics": [("analytics", [])],
    }


def test_data_class_for_picks_the_most_specific_cover(policy):
    assert policy.data_class_for("users", "preferences").name == "user_preferences"
    assert policy.data_class_for("users", "preferences.theme").name == "user_preferences"
    assert policy.data_class_for("users", "email").name == "user_accounts"
    assert policy.data_class_for("users").name == "user_accounts"
    assert policy.data_class_for("users", "preferencesBackup").name == "user_accounts"  # not a sub-path
    assert policy.data_class_for("messages", "text").name == "chat_history"
    assert policy.data_class_for("auditLog").name == "user_accounts"
    assert policy.data_class_for("analytics").criticality == "low"
    assert policy.data_class_for("syncState") is None
    assert policy.data_class_for("nope", "field") is None


def test_check_schedule_matches_the_appendix(policy):
    rows = {cat: (s.title, s.frequency, s.description, s.action_on_failure)
            for cat, s in policy.check_schedule.items()}
    assert rows["schema"] == ("Schema Validation", "continuous", "Validates documents against schema", "Log and alert")
    assert rows["referential"] == ("Referential Integrity", "daily", "Checks for orphaned references",
                                   "Alert and report")
    assert rows["consistency"] == ("Consistency Check", "weekly", "Verifies data consistency across collections",
                                   "Alert and investigate")
    assert rows["backup_verification"] == ("Backup Verification", "weekly", "Restores sample data from backup",
                                           "Alert and investigate")
    # decisions: scenarios the playbook describes without a schedule
    assert {c: rows[c][1] for c in ("data_loss", "corruption", "sync")} == dict.fromkeys(
        ("data_loss", "corruption", "sync"), "daily")
    assert {r[3] for r in rows.values()} <= {"Log and alert", "Alert and report", "Alert and investigate"}


def test_backup_schedule_matches_the_appendix(policy):
    rows = {k: (b.title, b.frequency, b.retention and parse_duration(b.retention), b.verification)
            for k, b in policy.backup.items()}
    assert rows == {
        "full": ("Full Database", "daily", timedelta(days=30), "weekly"),
        "incremental": ("Incremental", "hourly", timedelta(days=7), "daily"),
        "point_in_time": ("Point-in-Time", "continuous", timedelta(hours=72), "automatic"),
        "schema": ("Schema Backup", "on_change", None, "on_change"),  # None: indefinite
    }


def test_severity_clocks_and_escalation(policy):
    assert policy.severity.default == "P2" and policy.severity.label("P2") == "High"
    assert policy.severity.label("P1") == "Critical"
    assert policy.severity.level_for([]) == "P2"
    assert policy.severity.level_for(["high", "medium"]) == "P2"
    assert policy.severity.level_for(["low", "critical"]) == "P1"
    assert policy.severity_for([("users", "preferences.theme")]) == "P2"  # medium data only
    assert policy.severity_for([("messages", None), ("users", "email")]) == "P1"
    assert policy.clocks.acknowledge_delta == timedelta(hours=1)
    assert policy.clocks.resolve_delta == timedelta(hours=8)
    assert policy.clocks.warn_before_delta == timedelta(minutes=15)
    assert policy.escalation.path == ["Technical Lead", "Engineering Manager", "CTO"]
    assert policy.escalation.triggered("opened", "P2") == ["Technical Lead"]
    assert policy.escalation.triggered("opened", "P1") == ["Technical Lead", "Engineering Manager"]
    assert policy.escalation.triggered("acknowledge_missed", "P2") == ["Engineering Manager"]
    assert policy.escalation.triggered("resolve_missed", "P2") == ["CTO"]


def test_phases_windows_and_checklists(policy):
    windows = [(p.name, p.start_delta, p.end_delta) for p in policy.phases]
    h = timedelta(hours=1)
    assert windows == [("Immediate Response", 0 * h, 1 * h), ("Investigation", 1 * h, 3 * h),
                       ("Recovery Planning", 3 * h, 4 * h), ("Recovery Execution", 4 * h, 7 * h),
                       ("Service Restoration", 7 * h, 8 * h)]
    assert [[s.title for s in p.steps] for p in policy.phases] == [
        ["Assemble Response Team", "Containment", "Initial Communication"],
        ["Detailed Data Analysis", "Determine Scope and Impact", "Identify Root Cause"],
        ["Develop Recovery Strategy", "Prepare Recovery Resources", "Communication Planning"],
        ["Implement Recovery Plan", "Verify Recovery", "Update Communication"],
        ["Restore Normal Operation", "User Communication", "Final Verification"]]
    items = {item.id: item for _, item in policy.checklist()}
    assert len(items) == len(policy.checklist())  # ids are unique
    assert items["preserve_evidence"].action == "preserve_evidence"
    assert items["read_only_mode"].action == "read_only_mode"
    assert items["initial_status_page_update"].action == "first_communication"
    assert all(item.owner in policy.roles for item in items.values())


def test_checklist_texts_are_the_playbooks_words(policy):
    bullets = set(re.findall(r"^\s*- (.+)$", _playbook(), re.M))
    for _, item in policy.checklist():
        if item.id == "evaluate_recovery_options":  # the playbook's sub-list, joined
            assert item.text.startswith("Evaluate recovery options: restore from backup")
            continue
        assert item.text in bullets, item.id


def test_templates_are_the_playbooks_words(policy):
    text = _playbook()
    for name, heading in (("initial", "Initial Status Page Update"), ("progress", "Progress Update"),
                          ("resolution", "Resolution Update")):
        block = re.search(rf"### {heading}\n\n```\n(.*?)\n```", text, re.S)
        assert block, heading
        template = getattr(policy.templates, name)
        assert template.title == heading
        assert template.text == block.group(1)


DATA_MODEL = Path(__file__).resolve().parents[1] / "docs" / "data-model.md"


def _data_model_fields() -> dict[str, set[str]]:
    """{collection: dotted field paths} from the fields column of docs/data-model.md's table."""
    out: dict[str, set[str]] = {}
    for line in DATA_MODEL.read_text().splitlines():
        cols = [c.strip() for c in re.split(r"(?<!\\)\|", line)]
        if len(cols) < 4 or not re.fullmatch(r"`\w+`", cols[1]):
            continue
        prefix, last, fields = None, None, set()
        for tok in re.finditer(r"`([^`]+)`|(\{)|(\})", cols[2]):
            if tok.group(2):
                prefix = last
            elif tok.group(3):
                prefix = None
            else:
                last = tok.group(1)
                fields.add(f"{prefix}.{last}" if prefix else last)
        out[cols[1].strip("`")] = fields
    return out


def test_default_policy_covers_the_data_model(policy):
    """Every field of docs/data-model.md has a rule on its type, value or reference, and every
    date takes part in an ordering rule (issue 9, item 12)."""
    model = _data_model_fields()
    assert set(model) == set(policy.collections) and "preferences.fontSize" in model["users"]
    for coll, fields in model.items():
        ruled = set()
        for rule in policy.collections[coll].rules:
            if rule.kind in ("field", "reference"):
                ruled.add(rule.field)
            elif rule.kind == "unique":
                ruled.update(rule.fields)
        assert fields - ruled == set(), f"{coll}: fields without a rule"
    ordered = set()
    for coll, rule in policy.iter_rules():
        if rule.kind == "field_order":
            ordered |= {(coll, rule.earlier), (coll, rule.later)}
        elif rule.kind == "timestamp_order":
            ordered |= {(coll, rule.field), (rule.parent_collection, rule.parent_field)}
    dates = {(coll, r.field) for coll, r in policy.iter_rules() if r.kind == "field" and r.types == ["date"]}
    # the audit log's documentId points into whichever collection its entry names: no parent rule
    # can follow it, so its timestamp has no ordering of its own
    assert dates - ordered == {("auditLog", "timestamp")}
    r = policy.rule
    assert (r("users.preferences.fontSize").min, r("users.preferences.fontSize").max) == (12, 20)
    assert r("users.name.type").required and r("users.name.type").null_allowed is False
    assert r("auditLog.before.type").null_allowed is True  # null for inserts
    deletion = r("messages.timestamp.before_user_deletion")
    assert (deletion.relation, deletion.parent_collection, deletion.parent_field) == ("not_after", "users", "deletedAt")


def test_a_copied_field_rule_on_its_own_collection_is_refused(tmp_path):
    text = default_policy_text().replace("parent_collection: conversations\n        parent_field: userId",
                                         "parent_collection: messages\n        parent_field: userId", 1)
    with pytest.raises(PolicyError) as err:
        load_policy(_write(tmp_path, text))
    assert any("cannot point at its own collection" in p.message for p in err.value.problems)


def test_templates_placeholders_and_fill(policy):
    assert "[SPECIFIC_ISSUES]" in policy.templates.initial.text
    assert "[ESTIMATED_TIME]" in policy.templates.progress.text
    res = policy.templates.resolution
    assert "[BRIEF_CAUSE]" in res.text and "[BRIEF_RESOLUTION]" in res.text
    filled = res.fill(BRIEF_CAUSE="a failed migration", CURRENT_TIME="2026-01-01 10:00 UTC")
    assert "caused by a failed migration and" in filled and "Time: 2026-01-01 10:00 UTC" in filled
    assert "[BRIEF_RESOLUTION]" in filled and filled.startswith("[RESOLVED] ")


def test_default_rules(policy):
    ids = {coll: [r.id for r in cp.rules] for coll, cp in policy.collections.items()}
    # the playbook's own rules come first, in this order (tests and findings refer to their
    # positions and ids); the rules covering the rest of the data model follow them
    playbook = {
        "users": ["users.email.type", "users.email.format", "users.email.unique", "users.createdAt.type",
                  "users.lastLogin.type", "users.lastUpdated.type", "users.preferences.theme",
                  "users.preferences.notifications", "users.preferences.keys", "users.count_drop",
                  "users.deletions", "users.corruption", "users.sync"],
        "conversations": ["conversations.userId.ref", "conversations.createdAt.type", "conversations.migration",
                          "conversations.messageCount", "conversations.count_drop", "conversations.corruption"],
        "messages": ["messages.conversationId.ref", "messages.userId.ref", "messages.parentId.ref",
                     "messages.sender.enum", "messages.timestamp.type", "messages.timestamp.order",
                     "messages.userId.copied", "messages.count_drop", "messages.deletions", "messages.corruption"],
        "logs": ["logs.operation.enum", "logs.timestamp.type", "logs.userId.ref"],
        "auditLog": ["auditLog.operation.enum", "auditLog.timestamp.type"],
        "analytics": ["analytics.timestamp.type", "analytics.count_drop"],
    }
    assert {c: ids[c][:len(want)] for c, want in playbook.items()} == playbook and set(ids) == set(playbook)
    r = policy.rule
    assert (r("users.email.type").types, r("users.email.type").nullable, r("users.email.type").required) == (
        ["string"], False, True)
    assert r("users.email.format").format == "email" and r("users.email.format").only_if_present
    assert r("users.email.unique").fields == ["email"] and r("users.email.unique").case_insensitive
    assert r("users.lastLogin.type").only_if_present and not r("users.lastLogin.type").required
    assert r("users.preferences.theme").enum == ["light", "dark", "system"]
    assert r("users.preferences.keys").allowed_keys == ["theme", "notifications", "language", "fontSize"]
    assert r("users.count_drop").max_drop_percent == 10
    deletions = r("users.deletions")
    assert (deletions.soft_delete_field, deletions.audit_collection, deletions.lookback) == (
        "deletedAt", "auditLog", "24h")
    assert r("messages.deletions").soft_delete_field is None
    sync = r("users.sync")
    assert (sync.secondary_db, sync.secondary_collection, sync.timestamp_field, sync.sync_state_collection,
            sync.sync_state_id, sync.sync_state_field) == ("{db}_secondary", "users", "lastUpdated", "syncState",
                                                           "users", "lastSyncAt")
    parent = r("messages.parentId.ref")
    assert (parent.to, parent.allow_null, parent.required) == ("messages", False, False)
    assert r("conversations.userId.ref").required and r("messages.conversationId.ref").required
    migration = r("conversations.migration")
    assert (migration.version_field, migration.expected_version, migration.adds_fields) == (
        "schemaVersion", 2, ["messageCount"])
    counter = r("conversations.messageCount")
    assert (counter.field, counter.child_collection, counter.child_field) == (
        "messageCount", "messages", "conversationId")
    assert [i.keys for i in r("messages.corruption").expected_indexes] == [[("conversationId", 1), ("timestamp", 1)]]
    assert [i.keys for i in r("users.corruption").expected_indexes] == [[("email", 1)]]
    order = r("messages.timestamp.order")
    assert (order.field, order.parent_ref, order.parent_collection, order.parent_field) == (
        "timestamp", "conversationId", "conversations", "createdAt")
    copied = r("messages.userId.copied")
    assert (copied.parent_collection, copied.parent_field) == ("conversations", "userId")
    assert r("logs.operation.enum").enum == [
        "message_sent", "message_received", "login", "logout", "preferences_updated"]
    assert r("auditLog.operation.enum").enum == ["insert", "update", "delete"]


def test_lookups_raise_key_error(policy):
    assert policy.data_class("chat_history").rto == "4h"
    with pytest.raises(KeyError):
        policy.data_class("nope")
    with pytest.raises(KeyError):
        policy.rule("nope")


def test_default_policy_is_a_fresh_copy():
    a, b = default_policy(), default_policy()
    a.clocks.acknowledge = "2h"
    assert b.clocks.acknowledge == "1h"
    assert load_policy(None).clocks.acknowledge == "1h"


# --- durations -----------------------------------------------------------------------------------

@pytest.mark.parametrize("text, delta", [("15m", timedelta(minutes=15)), ("1h", timedelta(hours=1)),
                                         ("72h", timedelta(hours=72)), ("30d", timedelta(days=30)),
                                         ("90d", timedelta(days=90)), ("1h30m", timedelta(minutes=90)),
                                         ("2w", timedelta(weeks=2)), ("45s", timedelta(seconds=45))])
def test_parse_duration(text, delta):
    assert parse_duration(text) == delta
    assert parse_duration(format_duration(delta)) == delta


@pytest.mark.parametrize("bad", ["", "1", "h", "1 hour", "-1h", "1.5h", "1y", 60])
def test_parse_duration_errors(bad):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


# --- a bad policy file says where and what ------------------------------------------------------

def _write(tmp_path: Path, text: str, name: str = "policy.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _replace(old: str, new: str, count: int = 1) -> tuple[str, int]:
    """The default policy with ``old`` replaced, and the 1-based line of the first change."""
    text = default_policy_text()
    index = text.index(old)
    return text.replace(old, new, count), text[:index].count("\n") + 1


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = _write(tmp_path, "version: 1\nroles: [a, b\ndata_classes: []\n")
    with pytest.raises(PolicyError) as err:
        load_policy(path)
    assert re.search(rf"{re.escape(str(path))}:3:\d+: YAML syntax error", err.value.message)
    assert err.value.hint and err.value.problems[0].line == 3


def test_not_a_mapping(tmp_path):
    with pytest.raises(PolicyError, match="expected a mapping of policy sections"):
        load_policy(_write(tmp_path, "- just\n- a list\n"))


def test_wrong_type_in_a_rule_names_line_column_and_expected_values(tmp_path):
    text, line = _replace("types: [string]", "types: [strng]")
    path = _write(tmp_path, text)
    with pytest.raises(PolicyError) as err:
        load_policy(path)
    (problem,) = err.value.problems
    assert (problem.line, problem.column) == (line, 17)
    assert problem.path == "collections.users.rules[0].types[0]"
    assert "'string', 'int'" in problem.message and "(got 'strng')" in problem.message
    assert f"{path}:{line}:17: collections.users.rules[0].types[0]: Input should be" in err.value.message


def test_unknown_key_is_an_error_with_a_suggestion(tmp_path):
    text, line = _replace("        only_if_present: true\n", "        only_if_presnt: true\n")
    with pytest.raises(PolicyError) as err:
        load_policy(_write(tmp_path, text))
    (problem,) = err.value.problems
    assert problem.line == line and problem.column == 9  # the misspelt key itself
    assert "unknown key 'only_if_presnt'" in problem.message and "did you mean 'only_if_present'" in problem.message


def test_unknown_key_outside_rules(tmp_path):
    text, line = _replace("  warn_before: 15m", "  warn_befor: 15m")
    with pytest.raises(PolicyError) as err:
        load_policy(_write(tmp_path, text))
    # the misspelt key, and the key it should have been, now missing (at the clocks mapping)
    assert [(p.line, p.path) for p in err.value.problems] == [(line - 2, "clocks.warn_before"),
                                                              (line, "clocks.warn_befor")]
    assert err.value.problems[0].message == "Field required"
    assert "did you mean 'warn_before'" in err.value.problems[1].message


def test_unknown_rule_kind_points_at_kind(tmp_path):
    text, line = _replace("kind: unique", "kind: uniq")
    with pytest.raises(PolicyError) as err:
        load_policy(_write(tmp_path, text))
    (problem,) = err.value.problems
    assert problem.line == line and "'uniq'" in problem.message and "'unique'" in problem.message


def test_duplicate_rule_id(tmp_path):
    text, line = _replace("id: users.lastLogin.type", "id: users.createdAt.type")
    with pytest.raises(PolicyError) as err:
        load_policy(_write(tmp_path, text))
    (problem,) = err.value.problems
    assert problem.line == line and problem.path == "collections.users.rules[4].id"
    assert "duplicate rule id 'users.createdAt.type'" in problem.message


def test_reference_to_an_unknown_collection(tmp_path):
    text, line = _replace("to: conversations", "to: conversation")
    with pytest.raises(PolicyError) as err:
        load_policy(_write(tmp_path, text))
    (problem,) = err.value.problems
    assert problem.line == line and problem.path == "collections.messages.rules[0].to"
    assert "unknown collection 'conversation'" in problem.message


@pytest.mark.parametrize("old, new, message", [
    ("child_collection: messages", "child_collection: msgs", "unknown collection 'msgs'"),
    ("parent_collection: conversations", "parent_collection: convs", "unknown collection 'convs'"),
    ("  - collection: analytics", "  - collection: analytic", "unknown collection 'analytic'"),
    ("lookback: 24h", "lookback: 1 day", "invalid duration '1 day'"),
    ("rto: 4h", "rto: 4 hours", "invalid duration '4 hours'"),
    ("retention: 7d", "retention: 7", "duration needs a unit"),
    ("default: P2", "default: P3", "unknown level 'P3'"),
    ("      notify: CTO", "      notify: CEO", "'CEO' is not on the escalation path"),
    ("owner: Technical Lead}", "owner: Tech Lead}", "unknown role 'Tech Lead'"),
    ("action: read_only_mode}", "action: readonly}", "'preserve_evidence'"),
    ("    start: 3h", "    start: 2h", "overlaps the previous phase"),
    ("  warn_before: 15m", "  warn_before: 2h", "must be shorter than acknowledge"),
    ("  backup_verification:", "  backup_verificaton:", "Input should be 'schema'"),
])
def test_cross_section_and_value_checks(tmp_path, old, new, message):
    text, line = _replace(old, new)
    with pytest.raises(PolicyError) as err:
        load_policy(_write(tmp_path, text))
    assert any(message in p.message and p.line == line for p in err.value.problems), err.value.message


def test_duplicate_yaml_key(tmp_path):
    text = default_policy_text() + "clocks:\n  acknowledge: 2h\n  resolve: 8h\n  warn_before: 15m\n"
    with pytest.raises(PolicyError) as err:
        load_policy(_write(tmp_path, text))
    assert "duplicate key" in err.value.message and err.value.problems[0].path == "clocks"


def test_all_problems_are_reported_up_to_ten(tmp_path):
    text = default_policy_text().replace("types: [", "types: [no", 11)  # the first 11 field rules with types
    with pytest.raises(PolicyError) as err:
        load_policy(_write(tmp_path, text))
    assert len(err.value.problems) == 10
    assert "(11 problems)" in err.value.message and "and 1 more" in err.value.message
    lines = [p.line for p in err.value.problems]
    assert lines == sorted(lines)


def test_missing_sections_are_named(tmp_path):
    with pytest.raises(PolicyError) as err:
        parse_policy("version: 1\nroles: [A]\n", "mini.yaml")
    paths = {p.path for p in err.value.problems}
    assert {"data_classes", "clocks", "templates", "collections"} <= paths
    assert all(p.message == "Field required" for p in err.value.problems)


def test_missing_file_has_a_hint(tmp_path):
    with pytest.raises(FluxaError) as err:
        load_policy(tmp_path / "nope.yaml")
    assert "policy file not found" in err.value.message and err.value.hint


def test_a_team_can_change_its_policy_without_code(tmp_path):
    text = default_policy_text().replace("when_criticality_in: [critical]", "when_criticality_in: [critical, high]")
    policy = load_policy(_write(tmp_path, text))
    assert policy.severity_for([("messages", None)]) == "P1"


# --- command line -------------------------------------------------------------------------------

def test_cli_show(cli):
    res = cli("policy", "show")
    assert res.code == 0, res.stderr
    for word in ("User Accounts", "Alert and investigate", "Point-in-Time", "Engineering Manager",
                 "Service Restoration", "[SPECIFIC_ISSUES]", "users.email.unique"):
        assert word in res.stderr
    res = cli("policy", "show", "--section", "backup")
    assert res.code == 0 and "Full Database" in res.stderr and "User Accounts" not in res.stderr
    res = cli("policy", "show", "--section", "severity", "--json")
    assert res.code == 0 and res.json() == {
        "severity": {"levels": {"P1": "Critical", "P2": "High"}, "default": "P2",
                     "rules": [{"level": "P1", "when_criticality_in": ["critical"]}]},
        "clocks": {"acknowledge": "1h", "resolve": "8h", "warn_before": "15m"}}


def test_cli_show_json_is_a_valid_policy(cli, tmp_path):
    res = cli("policy", "show", "--json")
    assert res.code == 0
    dump = res.json()
    assert dump["data_classes"][0]["name"] == "user_accounts"
    path = _write(tmp_path, res.stdout, "dumped.json")  # JSON is YAML
    assert load_policy(path).model_dump() == default_policy().model_dump()
    res = cli("policy", "validate", str(path))
    assert res.code == 0 and "valid - 4 data classes, 6 collections, 78 rules" in res.stderr


def test_cli_validate(cli, tmp_path):
    good = _write(tmp_path, default_policy_text(), "good.yaml")
    res = cli("policy", "validate", str(good), "--json")
    assert res.code == 0 and res.json() == {"valid": True, "file": str(good), "data_classes": 4,
                                            "collections": 6, "rules": 78}
    text, line = _replace("types: [string]", "types: [strng]")
    bad = _write(tmp_path, text, "bad.yaml")
    res = cli("policy", "validate", str(bad))
    assert res.code == 2 and f"bad.yaml:{line}:17:" in res.stderr and "Traceback" not in res.stderr
    res = cli("policy", "validate", str(bad), "--json")
    doc = res.json()
    assert res.code == 2 and doc["valid"] is False
    assert doc["problems"][0]["line"] == line and doc["problems"][0]["path"] == "collections.users.rules[0].types[0]"
    res = cli("policy", "validate", str(tmp_path / "missing.yaml"), "--json")
    assert res.code == 2 and "policy file not found" in res.json()["error"]
    res = cli("policy", "show", "--file", str(bad))
    assert res.code == 2 and "hint:" in res.stderr
