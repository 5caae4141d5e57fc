"""HTTP on the WebSocket port: static browser client, /healthz, /metrics, and the admission checks
(bearer token, Origin allow-list, session limit) for ``/v1/realtime``. Pure functions of the request
plus a small :class:`Gate`; the websockets ``process_request`` hook calls :meth:`Gate.process`."""

from __future__ import annotations

import hmac
import ipaddress
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from voice.errors import ConfigError

REALTIME_PATH = "/v1/realtime"
#: Subprotocol a browser uses to pass the bearer token (OpenAI's browser convention).
TOKEN_SUBPROTOCOL = "openai-insecure-api-key."
#: Subprotocol that switches audio to raw binary PCM16 frames both ways.
BINARY_SUBPROTOCOL = "voice.pcm16"
MODEL_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
STATIC_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/worklet.js": ("worklet.js", "text/javascript; charset=utf-8"),
}


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None, token_env: str) -> None:
    """Refuse to listen off loopback without a bearer token."""
    if not is_loopback(host) and not token:
        raise ConfigError(
            f"refusing to listen on {host} without a token: set the environment variable {token_env} "
            "(server.token_env) to a secret, or bind 127.0.0.1"
        )


def offered_subprotocols(headers: Headers) -> list[str]:
    out: list[str] = []
    for value in headers.get_all("Sec-WebSocket-Protocol"):
        out.extend(p.strip() for p in value.split(",") if p.strip())
    return out


def select_subprotocol(offered: Sequence[str]) -> Subprotocol | None:
    """Echo one subprotocol: voice.pcm16 (binary audio) before realtime; never the token one."""
    for name in (BINARY_SUBPROTOCOL, "realtime"):
        if name in offered:
            return Subprotocol(name)
    return None


def _bearer(headers: Headers) -> str | None:
    auth = headers.get("Authorization")
    if auth and auth.lower().startswith("bearer "):
        return auth[7:].strip()
    for proto in offered_subprotocols(headers):
        if proto.startswith(TOKEN_SUBPROTOCOL):
            return proto[len(TOKEN_SUBPROTOCOL) :]
    return None


def origin_allowed(origin: str | None, host_header: str | None, allowed: Sequence[str]) -> bool:
    """No Origin (not a browser) passes; else it must be listed, or same host when the list is empty."""
    if origin is None:
        return True
    if allowed:
        return "*" in allowed or origin.rstrip("/") in [a.rstrip("/") for a in allowed]
    try:
        netloc = urlsplit(origin).netloc
    except ValueError:
        return False
    return bool(host_header) and netloc.lower() == (host_header or "").lower()


def _response(status: HTTPStatus, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> Response:
    headers = Headers()
    headers["Content-Type"] = content_type
    headers["Content-Length"] = str(len(body))
    headers["Cache-Control"] = "no-store"
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Connection"] = "close"
    for k, v in (extra or {}).items():
        headers[k] = v
    return Response(status.value, status.phrase, headers, body)


def text_response(status: HTTPStatus, text: str, extra: dict[str, str] | None = None) -> Response:
    return _response(status, text.encode(), "text/plain; charset=utf-8", extra)


@dataclass
class Gate:
    """Admission and plain-HTTP routes. ``sessions`` and ``health`` are callables read per request."""

    token: str | None
    allowed_origins: Sequence[str]
    max_sessions: int
    sessions: Callable[[], int]
    metrics_text: Callable[[], str]
    health: Callable[[], dict[str, Any]]
    on_reject: Callable[[str], None] = lambda reason: None

    def process(self, request: Request) -> Response | None:
        """None = go on with the WebSocket handshake; otherwise the HTTP response to send."""
        try:
            url = urlsplit(request.path)
        except ValueError:
            return text_response(HTTPStatus.BAD_REQUEST, "bad request path\n")
        path = url.path
        if path == REALTIME_PATH:
            return self._admit(request, url.query)
        if "upgrade" in request.headers.get("Connection", "").lower():
            return text_response(HTTPStatus.NOT_FOUND, f"no WebSocket at {path[:100]}; use {REALTIME_PATH}\n")
        if path == "/healthz":
            body = json.dumps(self.health()).encode()
            return _response(HTTPStatus.OK, body, "application/json")
        if path == "/metrics":
            return _response(HTTPStatus.OK, self.metrics_text().encode(), "text/plain; version=0.0.4; charset=utf-8")
        if path in STATIC_FILES:
            name, ctype = STATIC_FILES[path]
            body = resources.files("voice.server").joinpath("static", name).read_bytes()
            csp = "default-src 'self'; connect-src 'self' ws: wss:; media-src 'self' blob:; style-src 'self' 'unsafe-inline'"
            return _response(HTTPStatus.OK, body, ctype, {"Content-Security-Policy": csp})
        return text_response(HTTPStatus.NOT_FOUND, "not found\n")

    def _admit(self, request: Request, query: str) -> Response | None:
        if "upgrade" not in request.headers.get("Connection", "").lower():
            return text_response(HTTPStatus.UPGRADE_REQUIRED, f"{REALTIME_PATH} is a WebSocket endpoint\n",
                                 {"Upgrade": "websocket"})
        if self.token is not None:
            given = _bearer(request.headers)
            if given is None or not hmac.compare_digest(given.encode(), self.token.encode()):
                self.on_reject("unauthorized")
                return text_response(HTTPStatus.UNAUTHORIZED, "missing or wrong bearer token\n",
                                     {"WWW-Authenticate": "Bearer"})
        if not origin_allowed(request.headers.get("Origin"), request.headers.get("Host"), self.allowed_origins):
            self.on_reject("origin")
            return text_response(HTTPStatus.FORBIDDEN, "origin not allowed\n")
        try:
            params = parse_qs(query, strict_parsing=False, max_num_fields=8)
        except ValueError:
            return text_response(HTTPStatus.BAD_REQUEST, "bad query string\n")
        for model in params.get("model", []):
            if not MODEL_RE.match(model):
                self.on_reject("bad_model")
                return text_response(HTTPStatus.BAD_REQUEST, "model must match [A-Za-z0-9._:-]{1,64}\n")
        if self.sessions() >= self.max_sessions:
            self.on_reject("capacity")
            return text_response(HTTPStatus.SERVICE_UNAVAILABLE, "too many sessions, try again later\n",
                                 {"Retry-After": "5"})
        return None
