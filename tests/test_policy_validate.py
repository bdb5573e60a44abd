"""`policy validate` reports every problem of a file at once: structural problems (types, unknown
keys, missing keys) and the cross-section ones (unknown collections, roles, levels) together,
each at its own line, and none that only the repair of another problem would cause."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import yaml

from fluxa_integrity.policy import PolicyError, load_policy, parse_policy
from fluxa_integrity.policy.json_schema import policy_json_schema
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


# --- the JSON Schema editors use (policy schema) ------------------------------------------------

def _errors(schema: dict, value, root: dict, at: str = "$") -> list[str]:
    """A small JSON Schema (2020-12 subset) validator: the keywords pydantic emits. The test
    suite has no jsonschema dependency; see test_schema_with_jsonschema for the real one."""
    if "$ref" in schema:
        target = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return _errors(target, value, root, at)
    out: list[str] = []
    for key in ("anyOf", "oneOf"):
        if key in schema:
            passing = sum(not _errors(s, value, root, at) for s in schema[key])
            if passing == 0 or (key == "oneOf" and passing > 1):
                out.append(f"{at}: {key} matched {passing}")
    kinds = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None),
             "integer": int, "number": (int, float)}
    t = schema.get("type")
    if t and not (isinstance(value, kinds[t]) and not (t in ("integer", "number") and isinstance(value, bool))):
        return out + [f"{at}: not {t}"]
    if "const" in schema and value != schema["const"]:
        out.append(f"{at}: not {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        out.append(f"{at}: not one of {schema['enum']}")
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            out.append(f"{at}: {value!r} does not match {schema['pattern']}")
        if len(value) < schema.get("minLength", 0):
            out.append(f"{at}: too short")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"] or "maximum" in schema and value > schema["maximum"]:
            out.append(f"{at}: out of range")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            out.append(f"{at}: out of range")
    if isinstance(value, list):
        if not schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", len(value)):
            out.append(f"{at}: wrong length")
        prefix = schema.get("prefixItems", [])
        for i, item in enumerate(value):
            sub = prefix[i] if i < len(prefix) else schema.get("items")
            if sub:
                out += _errors(sub, item, root, f"{at}[{i}]")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        out += [f"{at}.{k}: required" for k in schema.get("required", []) if k not in value]
        if len(value) < schema.get("minProperties", 0):
            out.append(f"{at}: too few keys")
        for k, v in value.items():
            if "propertyNames" in schema:
                out += _errors(schema["propertyNames"], k, root, f"{at}[key {k!r}]")
            if k in props:
                out += _errors(props[k], v, root, f"{at}.{k}")
            elif schema.get("additionalProperties") is False:
                out.append(f"{at}.{k}: unknown key")
            elif isinstance(schema.get("additionalProperties"), dict):
                out += _errors(schema["additionalProperties"], v, root, f"{at}.{k}")
    return out


def _schema_and_default():
    return policy_json_schema(), yaml.safe_load(default_policy_text())


def test_schema_accepts_the_default_policy_and_rejects_what_the_loader_rejects():
    schema, policy = _schema_and_default()
    assert _errors(schema, policy, schema) == []
    bad = [("misspelt key", lambda p, rule: p["clocks"].update(warn_befor="15m")),
           ("duration without unit", lambda p, rule: p["data_classes"][0].update(retention="7")),
           ("unknown type", lambda p, rule: rule.update(types=["strng"])),
           ("unknown rule kind", lambda p, rule: rule.update(kind="fieldd")),
           ("setting of another kind", lambda p, rule: rule.update(to_field="x")),
           ("missing section", lambda p, rule: p.pop("clocks"))]
    for what, spoil in bad:
        spoilt = copy.deepcopy(policy)
        spoil(spoilt, spoilt["collections"]["users"]["rules"][0])
        assert _errors(schema, spoilt, schema), what
        with pytest.raises(PolicyError):  # the schema refuses only what the loader refuses
            parse_policy(yaml.safe_dump(spoilt))


def test_schema_rules_require_their_kind_and_durations_have_a_pattern():
    schema, _ = _schema_and_default()
    rules = schema["$defs"]["CollectionPolicy"]["properties"]["rules"]["items"]
    kinds = set(rules["discriminator"]["mapping"])
    assert {"field", "unique", "reference", "counter", "deletions", "sync"} <= kinds
    for ref in rules["oneOf"]:
        assert "kind" in schema["$defs"][ref["$ref"].rsplit("/", 1)[1]]["required"]
    pattern = schema["$defs"]["Clocks"]["properties"]["acknowledge"]["pattern"]
    assert all(re.search(pattern, d) for d in ("15m", "1h30m", "90d"))
    assert not any(re.search(pattern, d) for d in ("7", "1 day", "h"))


def test_schema_with_jsonschema():
    jsonschema = pytest.importorskip("jsonschema")
    schema, policy = _schema_and_default()
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(policy, schema, cls=jsonschema.Draft202012Validator)


def test_cli_policy_schema(cli, tmp_path):
    res = cli("policy", "schema")
    assert res.code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["$schema"].endswith("2020-12/schema") and "collections" in doc["required"]
    out = tmp_path / "policy.schema.json"
    res = cli("policy", "schema", "--output", str(out))
    assert res.code == 0 and json.loads(out.read_text()) == doc and str(out) in res.stderr
    res = cli("policy", "schema", "--output", str(tmp_path / "no" / "such" / "dir.json"))
    assert res.code == 2 and "cannot write" in res.stderr
    # the editor modeline docs/policy.md shows is a comment the loader accepts
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"# yaml-language-server: $schema=./{out.name}\n" + default_policy_text())
    res = cli("policy", "validate", str(policy))
    assert res.code == 0, res.stderr


# --- review 1, item 5: a regex that does not compile is a policy problem, not a crash -------------

def _bad_regexes() -> str:
    text = default_policy_text()
    text = text.replace("        types: [string]\n        nullable: false\n",
                        "        types: [string]\n        nullable: false\n        pattern: '[a-z'\n", 1)
    return text.replace("        field: name\n        required: true\n        types: [string]\n",
                        "        field: name\n        required: true\n        types: [string]\n"
                        "        key_pattern: '(?P<x'\n", 1)


def test_a_pattern_or_key_pattern_that_does_not_compile_is_reported_at_its_line(tmp_path):
    text = _bad_regexes()
    problems = _problems(tmp_path, text)
    by_path = {p.path: p for p in problems}
    assert set(by_path) == {"collections.users.rules[0].pattern", "collections.users.rules[14].key_pattern"}
    bad = by_path["collections.users.rules[0].pattern"]
    assert "'[a-z'" in bad.message and "regular expression" in bad.message and "unterminated" in bad.message
    assert bad.line == _line_of(text, "pattern: '[a-z'")
    bad = by_path["collections.users.rules[14].key_pattern"]
    assert "'(?P<x'" in bad.message and bad.line == _line_of(text, "key_pattern: '(?P<x'")


def test_cli_validate_and_check_run_refuse_a_bad_regex_without_a_traceback(cli, tmp_path, mongo_uri, db):
    path = tmp_path / "bad.yaml"
    path.write_text(_bad_regexes())
    res = cli("policy", "validate", str(path), "--json")
    assert res.code == 2 and "Traceback" not in res.stderr, res.stderr
    messages = [p["message"] for p in res.json()["problems"]]
    assert len(messages) == 2 and all("regular expression" in m for m in messages), messages
    db.users.insert_one({"email": "a@b.test", "name": "A"})
    res = cli("check", "run", "--uri", mongo_uri, "--db", db.name, "--policy", str(path), "--json")
    assert res.code == 2 and "Traceback" not in res.stderr, res.stderr
    assert "regular expression" in json.dumps(res.json())
