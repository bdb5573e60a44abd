"""Waiting on readiness signals instead of sleeping, so tests hold on a loaded machine.

Shape: ``StderrWatch(proc)`` reads a child process's stderr in a thread and ``wait_for(pattern)``
blocks until a matching line appears (a readiness line); ``wait_until(predicate)`` polls any
condition (a row in the store, a file appearing). Both take a generous deadline: it bounds a
hang, it is never the expected wait. On timeout they fail the test saying what was awaited.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from typing import Callable

import pytest

#: An upper bound on a wait, not a guess at how long it takes: a loaded machine may be 10x slower.
DEADLINE_S = 120.0


class StderrWatch:
    """Collect a child's stderr (text mode) as it comes; wait for a pattern in it."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self._chunks: list[str] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        # read1-sized chunks, not lines: progress bars redraw with \r and rarely end a line
        while True:
            chunk = self.proc.stderr.read1(4096) if hasattr(self.proc.stderr, "read1") else self.proc.stderr.read(1)
            with self._cond:
                if not chunk:
                    self._closed = True
                    self._cond.notify_all()
                    return
                self._chunks.append(chunk.decode(errors="replace") if isinstance(chunk, bytes) else chunk)
                self._cond.notify_all()

    @property
    def text(self) -> str:
        with self._cond:
            return "".join(self._chunks)

    def wait_for(self, pattern: str, timeout: float = DEADLINE_S) -> re.Match:
        """Block until ``pattern`` (a regex) appears on stderr; fail if the process ends first."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = regex.search("".join(self._chunks))
                if found:
                    return found
                if self._closed:
                    pytest.fail(f"the process ended before printing {pattern!r}; stderr:\n{''.join(self._chunks)[-3000:]}")
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(f"no {pattern!r} on stderr within {timeout:.0f}s; stderr:\n{''.join(self._chunks)[-3000:]}")
                self._cond.wait(min(left, 1.0))

    def finish(self, timeout: float = DEADLINE_S) -> tuple[int, str]:
        """Wait for the process to exit; (exit code, whole stderr)."""
        code = self.proc.wait(timeout)
        self._thread.join(timeout)
        return code, self.text


def wait_until(predicate: Callable[[], object], what: str, timeout: float = DEADLINE_S, poll: float = 0.02):
    """Poll ``predicate`` until it returns something truthy (returned); fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        got = predicate()
        if got:
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(poll)
