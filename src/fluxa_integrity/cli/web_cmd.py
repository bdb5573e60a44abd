"""``fluxa-integrity web``: the HTTP API (web/app.py) served by uvicorn in the foreground.

It binds its socket itself (so ``--port 0`` can say which free port it got, and a taken port is a
clear error before anything starts), then prints one readiness line on stderr once uvicorn
accepts connections: ``... INFO web: serving the API on http://HOST:PORT ...``. SIGTERM or SIGINT
stops it (uvicorn finishes the requests in flight).
"""

from __future__ import annotations

import signal
import socket
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from ..errors import FluxaError
from .common import JsonOpt, PolicyOpt, emit_json, policy_from


def _line(msg: str) -> None:
    """One line on stderr in the service log's shape (timestamp UTC, level, message)."""
    sys.stderr.write(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} INFO {msg}\n")
    sys.stderr.flush()


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise FluxaError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                         "pick another --port (0: any free port) or --host") from exc
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def web(host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0 for every interface; "
                                 "put TLS in front of it)."),
        port: int = typer.Option(8080, "--port", min=0, max=65535, help="Port to listen on (0: any free port, "
                                 "printed on the readiness line)."),
        policy: Optional[Path] = PolicyOpt,
        json_out: bool = JsonOpt) -> None:
    """Serve the HTTP API (OpenAPI at /openapi.json, docs at /docs), the responder's console (/) and
    the public status page (/status) until SIGTERM/SIGINT. The API and the console need a token
    from `fluxa-integrity token create`."""
    import uvicorn

    from ..web.app import create_app

    app = create_app(policy=policy_from(policy))
    sock = _listen(host, port)
    bound = sock.getsockname()[1]
    shown_host = f"[{host}]" if ":" in host else host
    url = f"http://{shown_host}:{bound}"

    class Server(uvicorn.Server):
        async def startup(self, sockets=None) -> None:
            await super().startup(sockets=sockets)
            if not self.should_exit:
                _line(f"web: serving the API on {url} (OpenAPI {url}/openapi.json, docs {url}/docs, console "
                      f"{url}/, status page {url}/status); SIGTERM or SIGINT stops")

    server = Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    # uvicorn stops on SIGTERM/SIGINT, then raises the signal again against the handlers it found:
    # these let the command finish (its last line, --json, exit 0) instead of dying by the signal
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    server.run(sockets=[sock])
    _line("web: stopped")
    if json_out:
        emit_json({"url": url, "host": host, "port": bound})
