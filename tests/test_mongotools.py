"""Where mongodump and mongorestore come from (mongo/mongotools.py), without a database: the four
sources in their order, each with stand-ins whose answer is known - scripts on PATH with a given
--version, a tiny Go module named github.com/mongodb/mongo-tools served from a local checkout and
from a local file proxy, an HTTP proxy that answers 403 as proxy.golang.org does here.
"""

from __future__ import annotations

import http.server
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from fluxa_integrity.errors import FluxaError
from fluxa_integrity.mongo import mongotools

GO = shutil.which("go")
MAIN = """package main

import (
	"fmt"
	"os"
)

var (
	VersionStr = "built-without-version-string"
	GitCommit  = "build-without-git-commit"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "--version" {
		fmt.Printf("%s version: %s\\ngit version: %s\\n", NAME, VersionStr, GitCommit)
	}
}
"""


def fake_module(root: Path) -> Path:
    """A module with mongo-tools' path and layout, no dependencies: builds offline in seconds."""
    (root / "go.mod").parent.mkdir(parents=True, exist_ok=True)
    (root / "go.mod").write_text(f"module {mongotools.MODULE}\n\ngo 1.22\n")
    for name in mongotools.TOOLS:
        (root / name / "main").mkdir(parents=True)
        (root / name / "main" / f"{name}.go").write_text(MAIN.replace("NAME", f'"{name}"'))
    return root


def fake_tool(directory: Path, name: str, version_line: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(f"#!/bin/sh\necho '{version_line}'\n")
    path.chmod(0o755)


@pytest.fixture
def clean(monkeypatch, tmp_path):
    """No tools from the developer's environment, builds cached under tmp_path, a fresh process memo,
    Go's caches of its own (a fake mongo-tools must never enter the real module cache)."""
    for var in ("FLUXA_MONGOTOOLS_BIN", "FLUXA_MONGOTOOLS_SRC", "GOFLAGS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PATH", str(Path(GO).parent) if GO else str(tmp_path / "nothing"))
    monkeypatch.setenv("GOMODCACHE", str(tmp_path / "modcache"))
    monkeypatch.setenv("GOFLAGS", "-modcacherw")
    monkeypatch.setattr(mongotools, "cache_dir", lambda: tmp_path / "bin")
    monkeypatch.setattr(mongotools, "_refused", {})
    return tmp_path


def test_fluxa_mongotools_bin_comes_first_and_a_wrong_one_is_an_error(clean, monkeypatch):
    for name in mongotools.TOOLS:
        fake_tool(clean / "installed", name, f"{name} version: 100.9.4")
        fake_tool(clean / "onpath", name, f"{name} version: 100.10.0")
    monkeypatch.setenv("PATH", f"{clean / 'onpath'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FLUXA_MONGOTOOLS_BIN", str(clean / "installed"))
    tools = mongotools.obtain(progress=lambda m: None)
    assert tools.source == f"FLUXA_MONGOTOOLS_BIN={clean / 'installed'}"
    assert mongotools.version(tools.mongodump) == "mongodump version: 100.9.4"
    (clean / "installed" / "mongorestore").unlink()
    with pytest.raises(FluxaError, match="has no executable mongorestore") as wrong:
        mongotools.obtain(progress=lambda m: None)
    assert not isinstance(wrong.value, mongotools.ToolsUnavailable)  # asked for explicitly: a failure, not a skip


def test_path_tools_are_used_only_at_100x(clean, monkeypatch):
    for name in mongotools.TOOLS:
        fake_tool(clean / "onpath", name, f"{name} version: 100.10.0")
    monkeypatch.setenv("PATH", f"{clean / 'onpath'}{os.pathsep}{os.environ['PATH']}")
    assert mongotools.source(progress=lambda m: None) == f"PATH ({clean / 'onpath' / 'mongodump'} 100.10.0)"
    fake_tool(clean / "onpath", "mongodump", "mongodump version: r4.2.0")  # the pre-100 tools: another format
    monkeypatch.setenv("GOPROXY", "off")
    with pytest.raises(mongotools.ToolsUnavailable, match=r"not 100\.x \(mongodump r4\.2\.0, mongorestore 100\.10\.0\)"):
        mongotools.obtain(progress=lambda m: None)


@pytest.mark.skipif(not GO, reason="needs Go")
def test_a_checkout_is_built_once_atomically_and_a_failed_build_is_a_clear_error(clean, monkeypatch):
    src = fake_module(clean / "mongo-tools")
    monkeypatch.setenv("FLUXA_MONGOTOOLS_SRC", str(src))
    tools = mongotools.obtain(progress=lambda m: None)
    assert tools.source.startswith(f"FLUXA_MONGOTOOLS_SRC={src}")
    assert mongotools.version(tools.mongorestore) == f"mongorestore version: unversioned (built from the checkout {src})"
    built = tools.mongodump.stat().st_mtime_ns
    assert mongotools.obtain(progress=lambda m: None) == tools and tools.mongodump.stat().st_mtime_ns == built  # cached
    (src / "mongodump" / "main" / "mongodump.go").write_text("package main\n\nfunc main() { broken }\n")
    with pytest.raises(FluxaError, match=r"building mongodump failed[\s\S]*undefined: broken"):
        mongotools.obtain(progress=lambda m: None)  # an edit rebuilds, and this one fails
    assert not any(p.name.endswith(".tmp") for p in (clean / "bin").rglob("*"))  # nothing half-built left
    monkeypatch.setenv("PATH", str(clean / "nothing"))
    with pytest.raises(mongotools.ToolsUnavailable, match="`go` is not on PATH") as no_go:
        mongotools.obtain(progress=lambda m: None)
    assert "FLUXA_MONGOTOOLS_BIN" in no_go.value.hint
    monkeypatch.setenv("FLUXA_MONGOTOOLS_SRC", str(clean))
    with pytest.raises(FluxaError, match="is not a mongo-tools checkout"):
        mongotools.obtain(progress=lambda m: None)


def file_proxy(root: Path, module_src: Path, version: str) -> Path:
    """A GOPROXY=file:// tree serving ``module_src`` as mongo-tools at ``version``."""
    import zipfile

    at = root / mongotools.MODULE / "@v"
    at.mkdir(parents=True)
    (at / f"{version}.info").write_text(f'{{"Version":"{version}","Time":"2026-07-02T22:11:38Z"}}')
    (at / f"{version}.mod").write_text((module_src / "go.mod").read_text())
    with zipfile.ZipFile(at / f"{version}.zip", "w") as z:
        for path in sorted(module_src.rglob("*")):
            if path.is_file():
                z.write(path, f"{mongotools.MODULE}@{version}/{path.relative_to(module_src)}")
    (at / "list").write_text(version + "\n")
    return root


@pytest.mark.skipif(not GO, reason="needs Go")
def test_the_proxy_way_downloads_the_pinned_version_builds_it_and_says_so(clean, monkeypatch):
    pinned = mongotools.pin()
    proxy = file_proxy(clean / "proxy", fake_module(clean / "module"), pinned["version"])
    monkeypatch.setenv("GOPROXY", proxy.as_uri())
    monkeypatch.setenv("GONOSUMDB", mongotools.MODULE)  # the checksum database knows no fake
    tools = mongotools.obtain(progress=lambda m: None)
    assert tools.source.startswith(f"the Go module proxy ({mongotools.MODULE}@{pinned['version']}")
    assert mongotools.version(tools.mongodump) == f"mongodump version: {pinned['version']} (built from the Go module proxy)"
    assert (clean / "bin").exists() and not [p for p in (clean / "bin").iterdir() if p.name.startswith(".")]
    monkeypatch.setenv("GOPROXY", "off")  # the second time nothing is downloaded
    assert mongotools.obtain(progress=lambda m: None) == tools


class Refusing(http.server.BaseHTTPRequestHandler):
    """proxy.golang.org's answer for mongo-tools on this machine."""

    hits = 0

    def do_GET(self):
        type(self).hits += 1
        body = b"This module version is not available."
        self.send_response(403)
        self.send_header("Content-Type", "text/plain; charset=UTF-8")  # Go quotes only a text body
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.mark.skipif(not GO, reason="needs Go")
def test_a_refusing_proxy_is_tools_unavailable_asked_once_per_process(clean, monkeypatch):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("GOPROXY", f"http://127.0.0.1:{server.server_address[1]}")
        with pytest.raises(mongotools.ToolsUnavailable) as refused:
            mongotools.obtain(progress=lambda m: None)
        message = str(refused.value.message)
        assert "FLUXA_MONGOTOOLS_BIN is not set" in message and "FLUXA_MONGOTOOLS_SRC is not set" in message
        assert "no mongodump or mongorestore on PATH" in message
        assert "403 Forbidden" in message and "This module version is not available" in message
        assert all(way in refused.value.hint for way in ("FLUXA_MONGOTOOLS_BIN", "on PATH", "FLUXA_MONGOTOOLS_SRC"))
        hits = Refusing.hits
        t = time.perf_counter()
        with pytest.raises(mongotools.ToolsUnavailable) as again:
            mongotools.obtain(progress=lambda m: None)
        assert again.value is refused.value and Refusing.hits == hits  # remembered, not asked again
        assert time.perf_counter() - t < 1.0
    finally:
        server.shutdown()
    assert not (clean / "bin").exists() or not any((clean / "bin").iterdir())  # a refusal is never cached on disk
