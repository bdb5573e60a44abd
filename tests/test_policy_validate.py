"""`policy validate` reports every problem of a file at once: structural problems (types, unknown
keys, missing keys) and the cross-section ones (unknown collections, roles, levels) together,
each at its own line, and none that only the repair of another problem would cause."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fluxa_integrity.policy import PolicyError, load_policy
from fluxa_integrity.policy.loader import default_policy_text


def _line_of(text: str, needle: str, start: int = 0) -> int:
    return text[:text.index(needle, start)].count("\n") + 1


def _messages_section(text: str) -> int:
    return text.index("\n  messages:\n")


def _problems(tmp_path: Path, text: str) -> list:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError) as err:
        load_policy(path)
    return err.value.problems


def test_structural_and_reference_problems_are_reported_together(tmp_path):
    text = default_policy_text()
    text = text.replace("types: [string]", "types: [strng]", 1)  # structural, users.rules[0]
    text = text.replace("to: users", "to: user", 1)  # dangling reference in another rule
    problems = _problems(tmp_path, text)
    by_path = {p.path: p for p in problems}
    assert "(got 'strng')" in by_path["collections.users.rules[0].types[0]"].message
    dangling = [p for p in problems if "unknown collection 'user'" in p.message]
    assert len(dangling) == 1 and dangling[0].line == _line_of(text, "to: user\n")
    assert len(problems) == 2


def test_cross_problems_are_located_in_the_file_after_a_rule_is_set_aside(tmp_path):
    """A rule missing a required key is pruned to run the cross checks; the rules after it shift
    in the pruned copy, and their problems must still point at their own lines."""
    text = default_policy_text()
    start = _messages_section(text)
    first_ref = text.index("        to: conversations\n", start)
    text = text[:first_ref] + text[first_ref + len("        to: conversations\n"):]  # rules[0] loses `to`
    later = text.index("to: messages\n", start)
    text = text[:later] + "to: mesages\n" + text[later + len("to: messages\n"):]
    owner = "owner: Technical Lead}"
    text = text.replace(owner, "owner: Tech Lead}", 1)
    problems = _problems(tmp_path, text)
    missing = [p for p in problems if p.path == "collections.messages.rules[0].to"]
    assert missing and missing[0].message == "Field required"
    dangling = [p for p in problems if "unknown collection 'mesages'" in p.message]
    assert len(dangling) == 1 and dangling[0].line == _line_of(text, "to: mesages")
    assert re.fullmatch(r"collections\.messages\.rules\[\d+\]\.to", dangling[0].path)
    assert dangling[0].path != "collections.messages.rules[0].to"
    roles = [p for p in problems if "unknown role 'Tech Lead'" in p.message]
    assert len(roles) == 1 and roles[0].line == _line_of(text, "owner: Tech Lead}")


def test_no_problem_is_invented_by_replacing_an_invalid_section(tmp_path):
    """An invalid severity section is replaced by the default's to check the rest; the triggers
    that name this file's own levels must not be reported against the default's levels."""
    text = default_policy_text()
    text = text.replace("    P1: Critical\n    P2: High\n  default: P2\n", "    SEV1: Critical\n    SEV2: High\n  default: SEV3\n")
    text = text.replace("    - level: P1\n", "    - level: SEV1\n").replace("severity: [P1]", "severity: [SEV1]")
    text = text.replace("owner: Technical Lead}", "owner: Tech Lead}", 1)
    problems = _problems(tmp_path, text)
    messages = sorted(p.message for p in problems)
    assert len(problems) == 2, messages
    assert any("unknown level 'SEV3'" in m for m in messages)
    assert any("unknown role 'Tech Lead'" in m for m in messages)


def test_missing_sections_do_not_flood_with_consequences(tmp_path):
    problems = _problems(tmp_path, "version: 1\nroles: [A]\ncollections: {c: {rules: [{id: x, kind: reference, "
                                   "field: a, to: nowhere}]}}\n")
    assert {p.path for p in problems if p.message == "Field required"} >= {"data_classes", "clocks", "phases"}
    dangling = [p for p in problems if "unknown collection 'nowhere'" in p.message]
    assert len(dangling) == 1 and dangling[0].line == 3
    assert all(p.message == "Field required" for p in problems if p is not dangling[0])


def test_cli_validate_json_lists_every_problem(cli, tmp_path):
    text = default_policy_text().replace("types: [string]", "types: [strng]", 1).replace("to: users", "to: user", 1)
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    res = cli("policy", "validate", str(path), "--json")
    assert res.code == 2
    doc = res.json()
    assert doc["valid"] is False
    messages = [p["message"] for p in doc["problems"]]
    assert any("(got 'strng')" in m for m in messages) and any("unknown collection 'user'" in m for m in messages)
