"""Load a policy file, and say exactly where it is wrong: ``file:line:col: path: what was expected``.

The YAML is composed into a node tree (which keeps line marks) and the data pydantic validates
is constructed from that same tree. A pydantic error's ``loc`` is walked down the node tree to
find the line of the offending value.
"""

from __future__ import annotations

import copy
import difflib
import functools
import types
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from yaml.nodes import MappingNode, Node, SequenceNode

from ..errors import FluxaError
from .models import Loc, Policy, PolicyProblems, dotted

MAX_REPORTED = 10
DEFAULT_POLICY_NAME = "default_policy.yaml"
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: 10x faster
DURATION_FIELDS = {"retention", "rto", "rpo", "acknowledge", "resolve", "warn_before", "start", "end", "lookback"}


@dataclass(frozen=True)
class Problem:
    line: int  # 1-based
    column: int  # 1-based
    path: str  # e.g. collections.users.rules[3].types[0]; "" for the file as a whole
    message: str

    def render(self, source: str) -> str:
        where = f"{source}:{self.line}:{self.column}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"

    def as_dict(self) -> dict:
        return {"line": self.line, "column": self.column, "path": self.path, "message": self.message}


class PolicyError(FluxaError):
    """An invalid policy file; ``problems`` has every located problem (up to MAX_REPORTED)."""

    def __init__(self, source: str, problems: list[Problem], total: int | None = None):
        self.source, self.problems = source, problems
        total = total if total is not None else len(problems)
        lines = [p.render(source) for p in problems]
        if total > len(problems):
            lines.append(f"... and {total - len(problems)} more")
        noun = "problem" if total == 1 else "problems"
        super().__init__(f"invalid policy {source} ({total} {noun}):\n  " + "\n  ".join(lines),
                         "fix the lines above; the format is described in docs/policy.md "
                         "(`fluxa-integrity policy show --json` prints the default policy)")


def load_policy(path: Path | str | None = None) -> Policy:
    """The policy in ``path``; None means the packaged default Fluxa policy."""
    if path is None:
        return default_policy()
    path = Path(path)
    if not path.is_file():
        raise FluxaError(f"policy file not found: {path}" if not path.exists() else f"not a file: {path}",
                         "check the path; `fluxa-integrity policy show` shows the default policy to start from")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FluxaError(f"cannot read policy file {path}: {exc}", "it must be a readable UTF-8 YAML file") from exc
    return parse_policy(text, str(path))


@functools.lru_cache(maxsize=1)
def default_policy_text() -> str:
    return resources.files(__package__).joinpath(DEFAULT_POLICY_NAME).read_text(encoding="utf-8")


@functools.lru_cache(maxsize=1)
def _parsed_default() -> Policy:
    return parse_policy(default_policy_text(), DEFAULT_POLICY_NAME)


def default_policy() -> Policy:
    """A fresh copy of the packaged default (callers may modify it)."""
    return _parsed_default().model_copy(deep=True)


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = " ".join(filter(None, [exc.problem, f"({exc.context})" if exc.context else None]))
        raise PolicyError(source, [Problem(mark.line + 1 if mark else 1, mark.column + 1 if mark else 1, "",
                                           f"YAML syntax error: {what}")]) from exc
    except yaml.YAMLError as exc:
        raise PolicyError(source, [Problem(1, 1, "", f"YAML error: {exc}")]) from exc
    finally:
        loader.dispose()
    if not isinstance(data, dict) or root is None:
        line = root.start_mark.line + 1 if root is not None else 1
        raise PolicyError(source, [Problem(line, 1, "", "expected a mapping of policy sections "
                                           "(data_classes, check_schedule, backup, ...)")])
    problems = _duplicate_keys(root)
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        problems += _validation_problems(exc, root)
        # cross-section checks run only on a structurally valid policy: run them on what is valid
        problems += [_problem(root, loc, msg, at_key=False, tags=False) for loc, msg in _salvaged_problems(data, exc)]
    else:
        if not problems:
            return policy
    problems.sort(key=lambda p: (p.line, p.column))
    raise PolicyError(source, problems[:MAX_REPORTED], total=len(problems))


# --- every problem at once: cross-section checks on the valid remainder -----------------------------

# A section substituted by the default's makes the cross-section checks of the sections that
# refer to it meaningless (owners checked against the default's roles): their problems are dropped.
_DEPENDENTS = {"roles": {"roles", "phases", "escalation"}, "severity": {"severity", "escalation"},
               "escalation": {"escalation"}, "collections": {"collections", "data_classes"}}
_MAX_SALVAGE_ROUNDS = 30


def _salvaged_problems(data: dict, first: ValidationError) -> list[tuple[Loc, str]]:
    """The cross-section problems of ``data`` with its invalid parts set aside, located in the
    original file. Invalid parts are pruned as narrowly as possible (a list item, an optional
    key, a collection's bad settings); a required section that is invalid is replaced by the
    packaged default's, and problems that could stem from the replacement are dropped. The
    structural problems themselves are reported from the first validation only."""
    work = copy.deepcopy(data)
    kept: dict[int, list[int]] = {}  # id(list in work) -> original index of each remaining item
    touched: list[tuple] = []  # original-coordinate paths pruned or replaced
    replaced: set[str] = set()  # top-level sections replaced by the default's
    exc = first
    for _ in range(_MAX_SALVAGE_ROUNDS):
        cross = [e for e in exc.errors() if not e["loc"] and isinstance(e.get("ctx", {}).get("error"), PolicyProblems)]
        if cross and len(exc.errors()) == 1:
            if exc is first:
                return []  # a structurally valid file: the caller has these problems already
            out = []
            for loc, msg in cross[0]["ctx"]["error"].problems:
                orig = _original_loc(work, tuple(loc), kept)
                if orig is None or any(orig[:len(t)] == t for t in touched):
                    continue
                if any(orig[0] in _DEPENDENTS.get(sec, {sec}) for sec in replaced):
                    continue
                out.append((orig, msg))
            return out
        # all targets in file coordinates first: pruning one shifts the indexes of the others
        targets = set()
        for err in exc.errors():
            inner = err.get("ctx", {}).get("error")
            locs = [tuple(err["loc"]) + tuple(loc) for loc, _ in inner.problems] \
                if isinstance(inner, PolicyProblems) else [tuple(err["loc"])]
            for loc in locs:
                orig = _original_loc(work, _data_path(work, loc), kept)
                if orig is not None:
                    targets.add(orig)
        progress = False
        for orig in sorted(targets, key=lambda t: [(isinstance(e, str), e) for e in t], reverse=True):
            path = _work_loc(work, orig, kept)
            if path is not None and _set_aside(work, path, kept, touched, replaced):
                progress = True
        if not progress:
            return []
        try:
            Policy.model_validate(work)
        except ValidationError as again:
            exc = again
            continue
        return []
    return []


def _data_path(data, loc: Loc) -> tuple | None:
    """``loc`` (pydantic's, with union tags and ``[key]`` markers) as keys and indexes of ``data``;
    a missing key ends the path at its parent."""
    node, path = data, []
    for elem in loc:
        if isinstance(node, dict):
            if elem == "[key]":
                break  # a bad key: the entry is what to set aside
            if elem not in node:
                if node.get("kind") == elem:
                    continue  # discriminator tag
                path.append(elem)  # missing or unknown key: a path ending here
                break
            node = node[elem]
        elif isinstance(node, list) and isinstance(elem, int) and 0 <= elem < len(node):
            node = node[elem]
        else:
            break
        path.append(elem)
    return tuple(path)


def _get(data, path: tuple):
    for elem in path:
        data = data[elem]
    return data


def _set_aside(work: dict, path: tuple, kept: dict, touched: list, replaced: set) -> bool:
    """Prune the narrowest part of ``work`` containing ``path``; False when nothing more can go."""
    for depth in range(len(path), 0, -1):
        parent_path, elem = path[:depth - 1], path[depth - 1]
        try:
            parent = _get(work, parent_path)
        except (KeyError, IndexError, TypeError):
            continue
        orig = _original_loc(work, path[:depth], kept)
        if orig is None or orig in touched:
            continue
        container, required = _slot(work, path[:depth])
        if isinstance(parent, list) and isinstance(elem, int) and elem < len(parent):
            order = kept.setdefault(id(parent), list(range(len(parent))))
            del parent[elem], order[elem]
        elif isinstance(parent, dict) and container == "model" and not required:
            if elem not in parent:
                continue
            del parent[elem]
        elif isinstance(parent, dict) and container == "collections":
            parent[elem] = {}  # keep the collection (rules point at it), drop its settings
        elif isinstance(parent, dict) and container == "dict":
            fallback = _default_at(orig)
            if fallback is None:  # an entry the default lacks: gone, so its keys are unknown
                parent.pop(elem, None)
                replaced.add(orig[0])
            else:
                parent[elem] = fallback
        elif isinstance(parent, dict) and depth == 1:
            fallback = _default_at(orig)
            if fallback is None:
                parent.pop(elem, None)
            else:
                parent[elem] = fallback
            replaced.add(elem)
        else:
            continue
        touched.append(orig)
        return True
    return False


def _slot(work: dict, path: tuple) -> tuple[str | None, bool]:
    """What holds the last element of ``path``: ``model`` (and whether the key is required),
    ``list``, ``collections`` or another ``dict``; found from the Policy's type annotations."""
    tp, node, container, required = Policy, work, None, False
    for elem in path:
        models = [m for m in _members(tp) if isinstance(m, type) and issubclass(m, BaseModel)]
        if len(models) > 1 and isinstance(node, dict):
            models = [m for m in models if "kind" in m.model_fields and m.model_fields["kind"].default == node.get("kind")]
        lists = [m for m in _members(tp) if get_origin(m) is list]
        dicts = [m for m in _members(tp) if get_origin(m) is dict]
        if len(models) == 1 and isinstance(elem, str):
            info = models[0].model_fields.get(elem)
            container, required = "model", bool(info and info.is_required())
            tp = info.annotation if info else None
        elif lists and isinstance(elem, int):
            container, required, tp = "list", False, get_args(lists[0])[0]
        elif dicts:
            container = "collections" if tp is Policy.model_fields["collections"].annotation else "dict"
            required, tp = False, get_args(dicts[0])[1]
        else:
            return None, False
        try:
            node = node[elem]
        except (KeyError, IndexError, TypeError):
            node = None
    return container, required


def _default_at(path: tuple):
    """The packaged default's value at ``path`` (JSON form), or None."""
    try:
        return _get(_parsed_default().model_dump(mode="json"), path)
    except (KeyError, IndexError, TypeError):
        return None


def _work_loc(work, orig: tuple, kept: dict) -> tuple | None:
    """A location in the file as a location in the pruned ``work``; None when it was pruned."""
    node, out = work, []
    for elem in orig:
        if isinstance(node, list) and isinstance(elem, int):
            order = kept.get(id(node), range(len(node)))
            if elem not in order:
                return None
            out.append(order.index(elem))
            node = node[out[-1]]
        elif isinstance(node, dict):
            out.append(elem)
            node = node.get(elem)
        else:
            out.append(elem)
            node = None
    return tuple(out)


def _original_loc(work, loc: Loc, kept: dict) -> tuple | None:
    """A location in the pruned ``work`` as a location in the file (list items shifted back)."""
    node, out = work, []
    for elem in loc:
        if isinstance(node, list) and isinstance(elem, int):
            if not 0 <= elem < len(node):
                return None
            out.append(kept.get(id(node), range(len(node)))[elem])
            node = node[elem]
        elif isinstance(node, dict):
            out.append(elem)
            node = node.get(elem)
        else:
            out.append(elem)
            node = None
    return tuple(out)


# --- locating problems -------------------------------------------------------------------------

def _duplicate_keys(node: Node, loc: Loc = ()) -> list[Problem]:
    """YAML keeps the last of duplicate keys silently; a policy must not."""
    found: list[Problem] = []
    if isinstance(node, MappingNode):
        first: dict[str, Node] = {}
        for key, value in node.value:
            if key.value in first:
                found.append(Problem(key.start_mark.line + 1, key.start_mark.column + 1, dotted(loc + (key.value,)),
                                     f"duplicate key (first at line {first[key.value].start_mark.line + 1})"))
            else:
                first[key.value] = key
            found += _duplicate_keys(value, loc + (key.value,))
    elif isinstance(node, SequenceNode):
        for i, item in enumerate(node.value):
            found += _duplicate_keys(item, loc + (i,))
    return found


def _validation_problems(exc: ValidationError, root: Node) -> list[Problem]:
    problems = []
    for err in exc.errors():
        inner = err.get("ctx", {}).get("error")
        if isinstance(inner, PolicyProblems):  # cross-section checks: one error, many locations
            for loc, msg in inner.problems:
                problems.append(_problem(root, tuple(err["loc"]) + tuple(loc), msg, at_key=False, tags=False))
            continue
        kind, loc = err["type"], tuple(err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if kind == "extra_forbidden":
            msg = _unknown_key_message(loc)
        elif kind not in ("missing", "value_error") and not isinstance(err["input"], (dict, list)):
            msg += f" (got {_short(err['input'])})"
            if loc and loc[-1] in DURATION_FIELDS:
                msg += "; a duration needs a unit, e.g. 15m, 1h, 30d"
        problems.append(_problem(root, loc, msg, at_key=kind in ("extra_forbidden", "union_tag_invalid"), tags=True))
    return problems


def _problem(root: Node, loc: Loc, message: str, at_key: bool, tags: bool) -> Problem:
    node, path = _walk(root, loc, at_key, tags)
    return Problem(node.start_mark.line + 1, node.start_mark.column + 1, dotted(tuple(path)), message)


def _walk(root: Node, loc: Loc, at_key: bool, tags: bool) -> tuple[Node, list]:
    """Follow ``loc`` down the YAML nodes. Elements that are not a key or index of the node at
    hand are skipped: pydantic adds union tags (``tags``: a rule's ``kind`` value, skipped once
    per rule) and ``[key]`` markers. A missing key is kept in the path but the node stays at its
    parent mapping. ``at_key``: point at the last key itself, not its value."""
    node, path, tag_skipped, key_node = root, [], set() if tags else None, None
    for i, elem in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(node, MappingNode):
            entries = {k.value: (k, v) for k, v in node.value}
            kind = entries.get("kind", (None, None))[1]
            if tags and kind is not None and getattr(kind, "value", None) == elem and id(node) not in tag_skipped:
                tag_skipped.add(id(node))  # discriminator tag, not the key of the same name
                continue
            if elem == "[key]":  # a bad dict key: point at the key itself
                node = key_node or node
                break
            if elem in entries:
                key_node, value = entries[elem]
                path.append(elem)
                node = key_node if (last and at_key) else value
                continue
            if last:
                path.append(elem)  # a required key that is missing
        elif isinstance(node, SequenceNode) and isinstance(elem, int) and 0 <= elem < len(node.value):
            path.append(elem)
            node = node.value[elem]
            if last and at_key and isinstance(node, MappingNode) and any(k.value == "kind" for k, _ in node.value):
                node = next(v for k, v in node.value if k.value == "kind")  # bad rule kind
    return node, path


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _unknown_key_message(loc: Loc) -> str:
    key = loc[-1]
    allowed = _allowed_keys(loc[:-1])
    if not allowed:
        return f"unknown key {key!r}"
    close = difflib.get_close_matches(str(key), allowed, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown key {key!r}; {hint}expected one of: {', '.join(allowed)}"


def _members(tp) -> list:
    if get_origin(tp) is Annotated:
        return _members(get_args(tp)[0])
    if get_origin(tp) in (Union, types.UnionType):
        return [m for arg in get_args(tp) for m in _members(arg)]
    return [tp]


def _allowed_keys(loc: Loc) -> list[str] | None:
    """The keys the model at ``loc`` accepts, found by walking the Policy's type annotations."""
    tp = Policy
    for elem in loc:
        members = _members(tp)
        models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
        tagged = [m for m in models if len(models) > 1 and "kind" in m.model_fields
                  and m.model_fields["kind"].default == elem]
        if tagged:  # discriminated union: the tag picks the member
            tp = tagged[0]
        elif len(models) == 1 and elem in models[0].model_fields:
            tp = models[0].model_fields[elem].annotation
        elif any(get_origin(m) is list for m in members) and isinstance(elem, int):
            tp = get_args(next(m for m in members if get_origin(m) is list))[0]
        elif any(get_origin(m) is dict for m in members) and isinstance(elem, str):
            tp = get_args(next(m for m in members if get_origin(m) is dict))[1]
        else:
            return None
    models = [m for m in _members(tp) if isinstance(m, type) and issubclass(m, BaseModel)]
    return list(models[0].model_fields) if len(models) == 1 else None
