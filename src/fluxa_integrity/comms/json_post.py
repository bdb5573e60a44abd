"""One JSON POST to a channel's endpoint, for the channels that need a JSON body of their own
(PagerDuty Events API v2, Slack Block Kit webhooks), with the standard library's urllib.

Shape: ``post_json(url, payload, where, timeout, service)`` sends ``payload`` as
``application/json`` and returns the answer's text. Failure: ``ChannelError`` whose message
starts with ``where`` (the channel's name, type and host:port) and says why - the receiver's HTTP
status with the first 200 characters of its answer (Slack answers ``invalid_blocks``, PagerDuty a
JSON error), or the socket error (``[Errno 111] Connection refused``). Retrying is the caller's
(incidents/notifications.py).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request


class ChannelError(Exception):
    """A delivery failed; the message names the channel, where it sent (host:port) and why."""


def post_json(url: str, payload: dict, where: str, timeout: float, service: str = "the receiver") -> str:
    req = urllib.request.Request(url, data=json.dumps(payload).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        try:
            said = exc.read().decode("utf-8", "replace").strip()[:200]
        except OSError:
            said = ""
        raise ChannelError(f"{where}: {service} answered {exc.code} {exc.reason}" + (f": {said}" if said else "")) \
            from exc
    except (urllib.error.URLError, OSError) as exc:
        raise ChannelError(f"{where}: {getattr(exc, 'reason', exc)}") from exc
