"""The suite's own load switch (FLUXA_TEST_LOAD=N, tests/conftest.py): when set, N busy loops
really run beside the tests; without it, none do."""

from __future__ import annotations

import psutil

from conftest import load_processes
from waiting import wait_until


def test_background_load_matches_the_setting(background_load):
    assert len(background_load) == load_processes()
    for pid in background_load:
        proc = psutil.Process(pid)
        assert proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
        start = proc.cpu_times().user
        # a busy loop burns CPU continuously: its user time grows while we watch
        wait_until(lambda: proc.cpu_times().user > start + 0.05, f"busy process {pid} to use CPU")
