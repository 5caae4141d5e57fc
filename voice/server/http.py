"""HTTP on the WebSocket port: static browser client, /healthz, /metrics, and the admission checks
(Host and Origin allow-lists, bearer token, session limit) for ``/v1/realtime``. Pure functions of the request
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


#: Shortest bearer token accepted when binding beyond loopback.
MIN_TOKEN_CHARS = 16
#: Host names that always mean this machine (the default Host allow-list on loopback).
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


def check_token(raw: str | None, host: str, token_env: str) -> str | None:
    """The bearer token from the environment (stripped), or None; refuse a blank token, and
    listening off loopback without a token of at least MIN_TOKEN_CHARS characters."""
    token = None if raw is None else raw.strip()
    if raw and not token:
        raise ConfigError(f"the environment variable {token_env} (server.token_env) holds only whitespace; "
                          "set it to a secret or unset it")
    if not is_loopback(host):
        if not token:
            raise ConfigError(
                f"refusing to listen on {host} without a token: set the environment variable {token_env} "
                "(server.token_env) to a secret, or bind 127.0.0.1"
            )
        if len(token) < MIN_TOKEN_CHARS:
            raise ConfigError(f"refusing to listen on {host} with a {len(token)}-character token in {token_env}: "
                              f"use at least {MIN_TOKEN_CHARS} characters (e.g. openssl rand -hex 16)")
    return token or None


def split_host(value: str) -> tuple[str, int | None] | None:
    """``name[:port]`` (a Host header or an allow-list entry) -> (lowercase name, port), None if malformed."""
    try:
        url = urlsplit("//" + value.strip())
        name, port = url.hostname, url.port
    except ValueError:
        return None
    if not name or url.path or url.query or url.fragment or url.username is not None:
        return None
    return name.lower(), port


def split_origin(value: str) -> tuple[str, str, int] | None:
    """``scheme://host[:port]`` -> (scheme, lowercase host, port with the scheme's default), None if not one."""
    try:
        url = urlsplit(value.strip())
        scheme, name, port = url.scheme.lower(), url.hostname, url.port
    except ValueError:
        return None
    default = {"http": 80, "https": 443}.get(scheme)
    if default is None or not name or url.path not in ("", "/") or url.query or url.username is not None:
        return None
    return scheme, name.lower(), port or default


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


@dataclass
class HostPolicy:
    """Which Host headers and browser Origins may reach the server (DNS-rebinding defence).

    ``loopback_only``: bound to loopback without a token and no ``allowed_hosts``: a Host must
    name 127.0.0.1, localhost or [::1] (or the bound loopback address) with the bound ``port``,
    so a page whose DNS name was rebound to 127.0.0.1 (its Host and Origin name the attacker's
    domain) is refused.
    """

    allowed_hosts: Sequence[str] = ()
    allowed_origins: Sequence[str] = ()
    loopback_only: bool = False
    port: int = 0
    bound_host: str = ""

    def _loopback_names(self) -> set[str]:
        names = set(LOOPBACK_NAMES)
        if is_loopback(self.bound_host):
            names.add(self.bound_host.strip("[]").lower())
        return names

    def _port_ok(self, port: int | None, default: int = 80) -> bool:
        return (port or default) == self.port

    def host_allowed(self, host_header: str | None) -> bool:
        if "*" in self.allowed_hosts:
            return True
        if not self.allowed_hosts and not self.loopback_only:
            return True
        got = split_host(host_header or "")
        if got is None:
            return False
        name, port = got
        if self.allowed_hosts:
            for entry in self.allowed_hosts:
                want = split_host(entry)
                if want is not None and want[0] == name and (want[1] is None or want[1] == port):
                    return True
            return False
        return name in self._loopback_names() and self._port_ok(port)

    def origin_allowed(self, origin: str | None, host_header: str | None) -> bool:
        """No Origin (not a browser) passes; ``null`` only when listed; else scheme, host and port
        must equal an allowed origin (by default ``http://`` + a loopback name or the Host)."""
        if origin is None:
            return True
        if "*" in self.allowed_origins:
            return True
        if origin.strip() == "null":
            return "null" in self.allowed_origins
        got = split_origin(origin)
        if got is None:
            return False
        if self.allowed_origins:
            return any(split_origin(a) == got for a in self.allowed_origins if a != "null")
        scheme, name, port = got
        if scheme != "http":  # this server speaks plain HTTP; a TLS proxy lists its origins
            return False
        if self.loopback_only:
            return name in self._loopback_names() and port == self.port
        host = split_host(host_header or "")
        return host is not None and (name, port) == (host[0], host[1] or 80)


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
    policy: HostPolicy
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
        if not self.policy.host_allowed(request.headers.get("Host")):
            self.on_reject("host")
            return text_response(HTTPStatus.FORBIDDEN, "host not allowed (server.allowed_hosts)\n")
        if path == REALTIME_PATH:
            return self._admit(request, url.query)
        if "upgrade" in request.headers.get("Connection", "").lower():
            return text_response(HTTPStatus.NOT_FOUND, f"no WebSocket at {path[:100]}; use {REALTIME_PATH}\n")
        if path == "/healthz":
            body = json.dumps(self.health()).encode()
            return _response(HTTPStatus.OK, body, "application/json")
        if path == "/metrics":
            if self.token is not None and not self._authorized(request):
                return text_response(HTTPStatus.UNAUTHORIZED, "missing or wrong bearer token\n",
                                     {"WWW-Authenticate": "Bearer"})
            return _response(HTTPStatus.OK, self.metrics_text().encode(), "text/plain; version=0.0.4; charset=utf-8")
        if path in STATIC_FILES:
            name, ctype = STATIC_FILES[path]
            body = resources.files("voice.server").joinpath("static", name).read_bytes()
            csp = "default-src 'self'; connect-src 'self' ws: wss:; media-src 'self' blob:; style-src 'self' 'unsafe-inline'"
            return _response(HTTPStatus.OK, body, ctype, {"Content-Security-Policy": csp})
        return text_response(HTTPStatus.NOT_FOUND, "not found\n")

    def _authorized(self, request: Request) -> bool:
        return self.authorized(request.headers)

    def authorized(self, headers: Headers) -> bool:
        """The request carries the server's bearer token (header or browser subprotocol)."""
        given = _bearer(headers)
        return self.token is not None and given is not None and hmac.compare_digest(
            given.encode(), self.token.encode())

    def _admit(self, request: Request, query: str) -> Response | None:
        if "upgrade" not in request.headers.get("Connection", "").lower():
            return text_response(HTTPStatus.UPGRADE_REQUIRED, f"{REALTIME_PATH} is a WebSocket endpoint\n",
                                 {"Upgrade": "websocket"})
        if self.token is not None and not self._authorized(request):
            self.on_reject("unauthorized")
            return text_response(HTTPStatus.UNAUTHORIZED, "missing or wrong bearer token\n",
                                 {"WWW-Authenticate": "Bearer"})
        if not self.policy.origin_allowed(request.headers.get("Origin"), request.headers.get("Host")):
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
