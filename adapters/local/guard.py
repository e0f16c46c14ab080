"""Who may talk to the local chat, and the headers every answer carries.

The chat has no login: whoever the page says is the member. What keeps other web sites from
acting through a visitor's browser:

- **Host allowlist**: a request (WebSocket included) must name one of the chat's own hosts in its
  ``Host`` header: the loopback names (``localhost``, ``127.0.0.1``, ``::1``), the address it was
  told to listen on when that is one host (not ``0.0.0.0`` or ``::``), and the names of
  ``GENBOT_LOCAL__ALLOWED_HOSTS``. A DNS-rebinding page reaches the port under its own name
  (``attacker.example``), so it is refused before anything else.
- **Same origin**: an ``Origin`` header must be ``http://`` or ``https://`` and that same host.
- **JSON only**: a POST must be ``application/json``, which another site's page cannot send
  without a CORS preflight (which the chat never grants).
- **Headers**: a strict Content-Security-Policy (scripts, styles and images from the chat itself,
  its WebSocket, no framing), ``X-Frame-Options: DENY``, ``X-Content-Type-Options: nosniff`` and
  ``Referrer-Policy: no-referrer`` on every answer.

The functions are pure; :func:`guard` and :func:`secure_headers` are the aiohttp hooks.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware

#: The names of this machine's loopback interface, always allowed.
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
#: Listening addresses that stand for every interface: they name no host.
WILDCARDS = frozenset({"", "0.0.0.0", "::"})  # noqa: S104 (names to recognise, not to bind)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: The application's allowed hosts, for :func:`secure_headers`.
HOSTS_KEY: web.AppKey[frozenset[str]] = web.AppKey("genbot_local_hosts", frozenset)


def host_name(value: str) -> str | None:
    """The host of a ``Host`` header (``localhost:8000``, ``[::1]:8000``, ``127.0.0.1``): lower
    case, without brackets, port or a trailing dot. None when it is not a host and port."""
    value = value.strip().lower()
    if value.startswith("["):
        host, bracket, port = value[1:].partition("]")
        if not bracket or (port and not port.startswith(":")):
            return None
        port = port[1:]
    else:
        host, _, port = value.partition(":")
        if ":" in port:
            return None  # a bare IPv6 address is not a valid Host header
    if port and not (port.isascii() and port.isdigit() and len(port) <= 5):
        return None
    host = host.removesuffix(".")
    if not host or not host.isascii() or not all(c.isalnum() or c in "-.:_" for c in host):
        return None
    return normalized(host)


def normalized(host: str) -> str:
    """A configured host as :func:`host_name` reads it from a header (``[::1]`` -> ``::1``)."""
    host = host.strip().lower().removesuffix(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def allowed_hosts(bind: str, extra: Iterable[str] = ()) -> frozenset[str]:
    """The hosts a request may name: loopback, ``bind`` when it is one host, and ``extra``."""
    named = {normalized(h) for h in (bind, *extra)} - WILDCARDS
    return LOOPBACK_HOSTS | named


def origin_allowed(origin: str, host_header: str) -> bool:
    """Whether ``origin`` is the page's own: ``http(s)://`` and exactly the requested host."""
    scheme, sep, rest = origin.partition("://")
    return bool(sep) and scheme in ("http", "https") and rest.lower() == host_header.strip().lower()


def content_security_policy(host_header: str | None) -> str:
    """The page's policy: everything from the chat itself, the WebSocket on the same host
    (named explicitly for browsers whose ``'self'`` does not cover ``ws:``), nothing else."""
    sockets = f" ws://{host_header} wss://{host_header}" if host_header else ""
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        f"connect-src 'self'{sockets}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


def refusal(status: type[web.HTTPException], sentence: str) -> web.HTTPException:
    return status(text=json.dumps({"ok": False, "error": sentence}), content_type="application/json")


#: The POSTs whose body is not JSON, and the type they must have. A browser sends neither JSON
#: nor ``application/octet-stream`` across origins without asking first (a CORS preflight, which
#: this server never grants), so a page elsewhere cannot forge either.
BODY_TYPES = {"/api/uploads": "application/octet-stream"}


def guard(hosts: frozenset[str]) -> Middleware:
    """The middleware that refuses, before anything else, a request for another host, from
    another origin, or a POST that is not JSON (or its path's :data:`BODY_TYPES`) (403, or 415
    for the last)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        header = request.headers.get(hdrs.HOST, "")
        if host_name(header) not in hosts:
            raise refusal(web.HTTPForbidden, "This chat does not answer to that host name.")
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is not None and not origin_allowed(origin, header):
            raise refusal(web.HTTPForbidden, "Cross-origin request.")
        wanted = BODY_TYPES.get(request.path, "application/json")
        if request.method == "POST" and request.content_type != wanted:
            raise refusal(
                web.HTTPUnsupportedMediaType, "Send JSON." if wanted.endswith("json") else f"Send {wanted}."
            )
        return await handler(request)

    return middleware


#: The sentence of an error answer aiohttp itself makes (an unknown path, a wrong method, ...).
_SENTENCES = {
    400: "Bad request.",
    403: "Not allowed.",
    404: "Not found.",
    405: "That address does not take this method.",
    413: "The request is too large.",
}


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error answer as ``{"ok": false, "error": "<one sentence>"}``: the chat's own keep
    their sentence, aiohttp's (404, 405, 413, ...) get one from :data:`_SENTENCES`."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        sentence = _SENTENCES.get(exc.status, "The request could not be handled.")
        kept = {k: v for k, v in exc.headers.items() if k.lower() not in ("content-type", "content-length")}
        return web.json_response({"ok": False, "error": sentence}, status=exc.status, headers=kept)


async def secure_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: the security headers, on every answer (errors and the
    WebSocket handshake included). The policy names the WebSocket's host only once the
    request's host is known to be allowed (see :func:`guard`)."""
    header = request.headers.get(hdrs.HOST, "")
    allowed: frozenset[str] = request.app.get(HOSTS_KEY, LOOPBACK_HOSTS)
    known = header.strip() if host_name(header) in allowed else None  # safe characters only
    response.headers["Content-Security-Policy"] = content_security_policy(known)
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
