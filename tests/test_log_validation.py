"""Validation errors in application logs (S12): classification by the policy's patterns, the logs
collection and JSON-lines files read per interval, a burst over the threshold and a jump against
the baseline become findings; the generated (clean) logs raise nothing."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from bson import ObjectId

from fluxa_integrity.checks.history import list_findings
from fluxa_integrity.errors import FluxaError
from fluxa_integrity.fluxa import model as fm
from fluxa_integrity.fluxa.generator import GenerateOptions, generate
from fluxa_integrity.monitors.log_errors import Classifier, LogCounts, as_time, read_logs
from fluxa_integrity.monitors.runner import LOGS, Row, run_monitors, save_rows
from fluxa_integrity.policy import default_policy
from fluxa_integrity.policy.loader import PolicyError, parse_policy, default_policy_text
from fluxa_integrity.store import open_store

UTC = timezone.utc
T0 = datetime(2026, 2, 1, 10, 0, tzinfo=UTC)
STEP = timedelta(minutes=5)


@pytest.fixture()
def policy():
    p = default_policy()
    p.monitors.enabled = False  # logs only: these tests judge nothing else
    return p


def test_classes_match_by_regex_first_class_wins(policy):
    clf = Classifier(policy.log_validation)
    assert clf.classify({"message": "ValidationError: messages.text must be a string"}) == "schema_validation"
    assert clf.classify({"message": "CastError: expected date, got string for createdAt"}) == "type_mismatch"
    assert clf.classify({"message": "Path `sender` is required."}) == "missing_field"
    assert clf.classify({"message": "dangling reference conversationId 65ab..."}) == "invalid_reference"
    assert clf.classify({"message": "user logged in", "operation": "login"}) is None
    assert clf.classify({"operation": "message_sent", "messageContent": "schema validation"}) is None  # not the message field
    # a class with several regexes needs all of them, level included
    p = default_policy()
    from fluxa_integrity.policy.monitors import LogErrorClass

    p.log_validation.classes = [LogErrorClass(name="write_rejected", level="(?i)^error$", operation="^message_")]
    clf = Classifier(p.log_validation)
    assert clf.classify({"level": "ERROR", "operation": "message_sent", "message": "x"}) == "write_rejected"
    assert clf.classify({"level": "info", "operation": "message_sent"}) is None


def test_bad_patterns_fail_at_load():
    text = default_policy_text().replace('''    - name: missing_field
      message: "(?i)(required|missing) (field|property|path|key)|is required"''', '''    - name: missing_field
      message: "(unclosed"''')
    with pytest.raises(PolicyError, match="invalid regular expression"):
        parse_policy(text)


def test_json_lines_times_and_bad_lines(tmp_path, policy):
    f = tmp_path / "app.jsonl"
    lines = [json.dumps({"timestamp": (T0 + timedelta(seconds=i)).isoformat(), "message": "ValidationError: bad",
                         "collection": "messages"}) for i in range(3)]
    lines += ['{"timestamp": {"$date": "2026-02-01T10:01:00Z"}, "message": "TypeError: invalid type"}',
              '{"timestamp": 1769940120, "message": "validation error"}',  # epoch seconds: 10:02
              "not json at all", '{"message": "no time"}', "",
              json.dumps({"timestamp": (T0 + STEP).isoformat(), "message": "ValidationError: next interval"})]
    f.write_text("\n".join(lines) + "\n")
    assert as_time(1769940120) == datetime(2026, 2, 1, 10, 2, tzinfo=UTC)
    out = read_logs(None, policy.log_validation, T0, T0 + STEP, [f])
    assert out.counts == {("schema_validation", "messages"): 3, ("type_mismatch", "file:app.jsonl"): 1,
                          ("schema_validation", "file:app.jsonl"): 1}
    assert out.bad_lines == 2 and out.entries == 5
    with pytest.raises(FluxaError, match="does not exist"):
        read_logs(None, policy.log_validation, T0, T0 + STEP, [tmp_path / "missing.jsonl"])


def _errors(db, when: datetime, n: int, message="ValidationError: messages.text must be a string"):
    db[fm.LOGS].insert_many([{"_id": ObjectId(), "timestamp": when + timedelta(seconds=i % 200), "level": "error",
                              "operation": "message_sent", "message": message, "collection": "messages"}
                             for i in range(n)])


def _seed(store, db_name, at: datetime, per_interval: list[int]) -> None:
    rows = []
    for k, n in enumerate(reversed(per_interval), start=1):
        s = at - STEP * k
        rows.append((Row(LOGS, s, True, {"entries": 100, "errors": {"schema_validation@messages": n} if n else {}}),
                     s + STEP, []))
    save_rows(store, db_name, rows, None)


def test_generated_logs_are_clean_and_a_burst_passes_the_threshold(client, db, policy):
    generate(db, GenerateOptions(users=20, seed=8, conversations_per_user=2, messages_per_conversation=3,
                                 secondary=False, start=T0 - timedelta(hours=1), days=1))
    store = open_store()
    # the generated logs of every interval of the span: no validation errors among them
    span = [(T0 - timedelta(hours=1) + STEP * i, T0 - timedelta(hours=1) + STEP * (i + 1)) for i in range(12)]
    rep = run_monitors(client, store, db.name, policy, intervals=span)
    assert sum(i["logs"]["entries"] for i in rep.intervals) > 0
    assert rep.findings == [] and all(i["logs"]["errors"] == {} for i in rep.intervals)
    # a burst: 25 errors in one interval (threshold 20), no history needed
    _errors(db, T0, 25)
    rep = run_monitors(client, store, db.name, policy, intervals=[(T0, T0 + STEP)])
    (f,) = rep.findings
    assert (f.rule_id, f.variant, f.count) == ("monitor.logs.schema_validation", "messages", 25)
    assert f.collection == "messages" and f.category == "log_validation" and f.data_class == "chat_history"
    assert "threshold 20" in f.message and f.samples[0]["value"]["samples"][0]["level"] == "error"
    assert [x.rule_id for x in list_findings(store, db.name)] == ["monitor.logs.schema_validation"]


def test_a_jump_against_the_baseline_under_the_threshold(client, db, policy):
    db[fm.LOGS].insert_one({"_id": ObjectId(), "timestamp": T0 - timedelta(days=1), "operation": "login"})
    store = open_store()
    _seed(store, db.name, T0, [0, 1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 1])  # the usual: a stray error now and then
    _errors(db, T0, 1)
    rep = run_monitors(client, store, db.name, policy, intervals=[(T0, T0 + STEP)])
    assert rep.findings == [] and "monitor.logs.schema_validation" in rep.judged  # one error: usual
    _errors(db, T0 + STEP, 12)  # under the threshold of 20, far over the usual
    rep = run_monitors(client, store, db.name, policy, intervals=[(T0 + STEP, T0 + 2 * STEP)])
    (f,) = rep.findings
    assert f.variant == "messages" and f.count == 12 and "a jump from the usual 0" in f.message
    # the next quiet interval closes it (the rule was judged and found nothing)
    rep = run_monitors(client, store, db.name, policy, intervals=[(T0 + 2 * STEP, T0 + 3 * STEP)])
    assert rep.findings == [] and list_findings(store, db.name) == []


def test_log_burst_from_a_file_on_the_command_line(cli, db, mongo_uri, tmp_path):
    f = tmp_path / "api.jsonl"
    f.write_text("\n".join(json.dumps({"timestamp": (T0 + timedelta(seconds=i)).isoformat(), "level": "warn",
                                       "message": f"CastError: expected objectId, got string for userId ({i})"})
                           for i in range(30)) + "\n")
    db[fm.LOGS].insert_one({"_id": ObjectId(), "timestamp": T0, "operation": "login"})
    res = cli("monitor", "run", "--uri", mongo_uri, "--db", db.name, "--start", "2026-02-01T10:00:00",
              "--end", "2026-02-01T10:05:00", "--log-file", str(f), "--json")
    assert res.code == 1, res.stderr  # findings: exit 1
    out = json.loads(res.stdout)
    assert [(x["rule_id"], x["variant"], x["count"]) for x in out["findings"]] == [
        ("monitor.logs.type_mismatch", "file:api.jsonl", 30)]
    assert out["intervals"][0]["logs"]["errors"] == {"type_mismatch@file:api.jsonl": 30}
