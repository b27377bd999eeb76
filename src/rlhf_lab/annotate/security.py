"""The web app's security parts: tokens and their digests, CSRF, rate limits, response headers, body limits.

Credentials are random tokens of 256 bits (invites, the admin token, sessions); the store keeps only their
SHA-256 digests. A slow hash (scrypt, PBKDF2) protects guessable passwords; against a 256-bit random
secret it adds nothing, while a fast digest lets every request find its session through a unique index.

CSRF: the double-submit pattern. Every visitor gets a random `rl_csrf` cookie (HttpOnly, SameSite=Strict);
pages carry the same value in a form field or a `<meta>` tag, and each state-changing request must send it
back (`csrf_token` field or `X-CSRF-Token` header). A cross-site page can neither read the cookie nor the
page, so it cannot forge the pair.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.exceptions import HTTPException

SESSION_COOKIE = "rl_session"
CSRF_COOKIE = "rl_csrf"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"

# No inline script or style anywhere: a completion that smuggles markup in can at worst render as text.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
                           "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
                           "form-action 'self'")
SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
]

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]


def new_token() -> str:
    """A URL-safe random token of 256 bits."""
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def tokens_equal(a: str | None, b: str | None) -> bool:
    """Constant-time comparison; False when either side is missing."""
    return bool(a) and bool(b) and hmac.compare_digest(a.encode(), b.encode())


def cookie_header(name: str, value: str, *, max_age: int | None, secure: bool) -> bytes:
    parts = [f"{name}={value}", "Path=/", "HttpOnly", "SameSite=Strict"]
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    if secure:
        parts.append("Secure")
    return "; ".join(parts).encode("latin-1")


class RateLimiter:
    """Blocks a key (a client address) after `limit` failed attempts within `window_s` seconds — a sliding
    window, thread-safe, in memory. Successful sign-ins are not counted: only guessing is slowed down.
    The caller records no failure while a key is blocked, so a block ends at most `window_s` after it
    began; a guesser gets `limit` tries per window.

    The key is the peer address, or the one a trusted proxy forwards (`serve --forwarded-allow-ips`).
    Each uvicorn worker keeps its own counts, so with W workers a client gets up to W × limit tries.
    """

    def __init__(self, *, limit: int, window_s: float):
        self.limit, self.window_s = limit, window_s
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        q = self._failures.setdefault(key, deque())
        while q and now - q[0] > self.window_s:
            q.popleft()
        return q

    def blocked(self, key: str) -> bool:
        with self._lock:
            return len(self._recent(key, time.monotonic())) >= self.limit

    def fail(self, key: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._recent(key, now).append(now)
            if len(self._failures) > 10_000:  # forget idle clients so memory stays bounded
                self._failures = {k: v for k, v in self._failures.items() if v and now - v[-1] <= self.window_s}


def _cookie(scope: Scope, name: str) -> str | None:
    for key, value in scope.get("headers", []):
        if key == b"cookie":
            for part in value.decode("latin-1").split(";"):
                k, _, v = part.strip().partition("=")
                if k == name:
                    return v
    return None


class SecurityMiddleware:
    """Pure ASGI middleware: security headers on every response, a CSRF cookie for every visitor, and
    request body limits (413 beyond them).

    A request to an upload route (`upload_routes`: POST paths matched whole) may carry `max_upload` bytes;
    `authorize_upload` decides from the headers alone whether it may send them at all (None, or the
    refusal's status and message), and only then is the body streamed on to the app, counted as it goes.
    Every other request is read in full first, at most `max_body` bytes, so an over-long chunked body is
    refused before the app sees any of it."""

    def __init__(self, app: ASGIApp, *, max_body: int, max_upload: int, upload_routes: tuple[re.Pattern, ...],
                 authorize_upload: Callable[[Scope], Awaitable[tuple[int, str] | None]], secure_cookies: bool):
        self.app, self.max_body, self.max_upload = app, max_body, max_upload
        self.upload_routes, self.authorize_upload = upload_routes, authorize_upload
        self.secure_cookies = secure_cookies

    async def __call__(self, scope: Scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        csrf = _cookie(scope, CSRF_COOKIE)
        new_csrf = None if csrf and len(csrf) >= 32 else new_token()
        scope.setdefault("state", {})["csrf"] = csrf if new_csrf is None else new_csrf

        async def secured_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.extend(SECURITY_HEADERS)
                if not any(k == b"cache-control" for k, _ in headers):
                    headers.append((b"cache-control", b"no-store"))
                if new_csrf is not None:
                    headers.append((b"set-cookie", cookie_header(CSRF_COOKIE, new_csrf, max_age=None,
                                                                 secure=self.secure_cookies)))
                message = {**message, "headers": headers}
            await send(message)

        upload = scope["method"] == "POST" and any(r.fullmatch(scope["path"]) for r in self.upload_routes)
        limit = self.max_upload if upload else self.max_body
        for key, value in scope["headers"]:
            if key == b"content-length" and value.isdigit() and int(value) > limit:
                await _refuse(send, 413, f"request body over the limit of {limit} bytes")
                return
        if upload:
            refused = await self.authorize_upload(scope)
            if refused is not None:  # nothing of the body has been read
                await _refuse(send, *refused)
                return
            await self.app(scope, _capped(receive, limit), secured_send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _refuse(send, 413, f"request body over the limit of {limit} bytes")
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, secured_send)


def _capped(receive, limit: int):
    """`receive` that raises 413 (through the app's error handler) once more than `limit` bytes came in."""
    size = 0

    async def capped() -> dict:
        nonlocal size
        message = await receive()
        if message["type"] == "http.request":
            size += len(message.get("body", b""))
            if size > limit:
                raise HTTPException(413, f"request body over the limit of {limit} bytes")
        return message

    return capped


async def _refuse(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *SECURITY_HEADERS]})
    await send({"type": "http.response.body", "body": body})
