"""Typed dependencies of the routes: the app context, who is signed in, and the CSRF check."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import annotated_types
from fastapi import Depends, HTTPException, Request
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from rlhf_lab.annotate import crud
from rlhf_lab.annotate.queue import FrontierHints
from rlhf_lab.annotate.security import (
    CSRF_COOKIE,
    CSRF_FIELD,
    CSRF_HEADER,
    SESSION_COOKIE,
    RateLimiter,
    hash_token,
    tokens_equal,
)
from rlhf_lab.annotate.store import AnnotationStore, utcnow
from rlhf_lab.annotate.writer import GroupCommitWriter

# A store id in a path or a body. The tables' ids are INTEGER columns, 32-bit on PostgreSQL; a larger
# number is refused here (422) rather than by the database driver (a 500, or a failed write batch).
MAX_ID = 2**31 - 1
StoreId = Annotated[int, annotated_types.Ge(1), annotated_types.Le(MAX_ID)]

PRINCIPAL_CACHE_S = 5.0  # how long a looked-up session is trusted without asking the store again


@dataclass
class AppContext:
    """Everything the routes share; one per app (one per uvicorn worker process).

    `principal_cache_s`: how long a looked-up session is trusted without asking the store again. A
    logout or a disable in this process evicts it at once; another process cannot evict it, so with
    several workers the app runs with 0 (every request asks the store, see `app_from_env`)."""

    store: AnnotationStore
    writer: GroupCommitWriter
    templates: Jinja2Templates
    sign_in_limiter: RateLimiter
    secure_cookies: bool = False
    run_dir: Path | None = None
    principal_cache_s: float = PRINCIPAL_CACHE_S
    hints: FrontierHints = field(default_factory=FrontierHints)
    _principals: dict[str, tuple[crud.Principal, float]] = field(default_factory=dict)
    _evictions: int = 0  # bumped by every eviction, so a lookup that raced one does not cache stale data
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def forget_session(self, session_hash: str) -> None:
        with self._lock:
            self._principals.pop(session_hash, None)
            self._evictions += 1

    def forget_annotator(self, annotator_id: int) -> None:
        """Evict every cached session of the annotator (after disabling them commits): their next request,
        on any thread of this process, asks the store and is refused."""
        with self._lock:
            for digest in [d for d, (p, _) in self._principals.items() if p.annotator_id == annotator_id]:
                del self._principals[digest]
            self._evictions += 1

    def cached(self, session_hash: str) -> crud.Principal | None:
        """The session's principal if looked up less than `principal_cache_s` ago (no store access)."""
        with self._lock:
            hit = self._principals.get(session_hash)
        if (hit is not None and time.monotonic() - hit[1] < self.principal_cache_s
                and hit[0].expires_at > utcnow()):
            return hit[0]
        return None

    def lookup(self, session_hash: str) -> crud.Principal | None:
        """The session's principal from the store, remembered for `principal_cache_s`."""
        now = time.monotonic()
        with self._lock:
            evictions = self._evictions
        with self.store.session() as s:
            p = crud.principal(s, session_hash)
        with self._lock:
            if p is None:
                self._principals.pop(session_hash, None)
            elif self.principal_cache_s > 0 and evictions == self._evictions:
                # an eviction since our read may concern this very session: then the read may predate
                # the disable, and caching it would undo the eviction
                if len(self._principals) > 50_000:
                    self._principals.clear()
                self._principals[session_hash] = (p, now)
        return p


def get_ctx(request: Request) -> AppContext:
    return request.app.state.ctx


CtxDep = Annotated[AppContext, Depends(get_ctx)]


async def principal_for(ctx: AppContext, session_token: str | None) -> crud.Principal | None:
    """Who holds this session cookie value, if anyone."""
    if not session_token or len(session_token) > 100:
        return None
    digest = hash_token(session_token)
    return ctx.cached(digest) or await run_in_threadpool(ctx.lookup, digest)


async def optional_principal(request: Request, ctx: CtxDep) -> crud.Principal | None:
    return await principal_for(ctx, request.cookies.get(SESSION_COOKIE))


MaybePrincipal = Annotated[crud.Principal | None, Depends(optional_principal)]


def _require(role: str):
    async def dependency(p: MaybePrincipal) -> crud.Principal:
        if p is None:
            raise HTTPException(401, "not signed in")
        if p.role != role:
            raise HTTPException(403, f"this page is for the {role} only")
        return p
    return dependency


AnnotatorDep = Annotated[crud.Principal, Depends(_require("annotator"))]
AdminDep = Annotated[crud.Principal, Depends(_require("admin"))]


async def check_csrf(request: Request) -> None:
    """Every state-changing request sends back the CSRF cookie's value (header or form field)."""
    cookie = request.cookies.get(CSRF_COOKIE)
    supplied = request.headers.get(CSRF_HEADER)
    if supplied is None and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")):
        supplied = (await request.form()).get(CSRF_FIELD)
    if not isinstance(supplied, str) or not tokens_equal(cookie, supplied):
        raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")


CSRF = Depends(check_csrf)


def client_key(request: Request) -> str:
    return request.client.host if request.client else "unknown"
