"""String formats a ``field`` rule can require (``format: <name>``): generic, app-agnostic checks.

Shape: ``FORMATS`` maps a format name to a predicate ``str -> bool``; the names are the
``Format`` literal of ``policy/rules.py`` (a test keeps the two in step). Every format rejects
control, format (invisible: zero-width, BOM, bidi overrides) and surrogate characters anywhere
in the value, whatever its pattern says: a NUL byte or a trailing newline in an address is
corruption, not a valid value. Patterns are matched whole (``fullmatch``), so ``$`` can never
accept a trailing newline.

Failure behaviour: predicates never raise; a value that is not a string is the type rule's
business, not the format's.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Callable

# local@domain.tld: no whitespace, exactly one @, at least one dot in the domain, no empty label
# at either end of the domain. Deliberately simple (RFC 5322 allows far more); stricter than the
# playbook's /^.+@.+\..+$/, so everything the playbook's query flags, this flags too.
EMAIL = re.compile(r"[^@\s]+@[^@\s.]+(?:\.[^@\s.]+)+")
EMAIL_MAX_LENGTH = 254  # RFC 5321: the longest address a mail server must accept

_INVISIBLE = {"Cc", "Cf", "Cs"}  # control (NUL, newline, DEL, C1), format (zero-width, BOM, bidi), surrogate


def has_control_characters(value: str) -> bool:
    """True when any character is a control, format or surrogate code point."""
    if value.isprintable():  # fast path: printable strings hold none of them (spaces aside)
        return False
    return any(unicodedata.category(ch) in _INVISIBLE for ch in value)


def is_email(value: str) -> bool:
    return (len(value) <= EMAIL_MAX_LENGTH and not has_control_characters(value)
            and EMAIL.fullmatch(value) is not None)


FORMATS: dict[str, Callable[[str], bool]] = {"email": is_email}
