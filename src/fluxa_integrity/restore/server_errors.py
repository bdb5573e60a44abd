"""Turn a server failure in the middle of a restore command into a FluxaError that says what
was interrupted and what to do (exit 2, no traceback): ``with server_errors(what, hint): ...``.
Only pymongo errors are translated; anything else propagates unchanged.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from pymongo.errors import PyMongoError

from ..errors import FluxaError
from ..mongo.connection import first_line


@contextmanager
def server_errors(what: str, hint: str) -> Iterator[None]:
    try:
        yield
    except PyMongoError as exc:
        raise FluxaError(f"{what}: {first_line(exc)}", hint) from exc
