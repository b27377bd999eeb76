"""Signing in and out. Tokens travel only in POST bodies (never in a URL the server sees): an invite link
`/join#TOKEN` keeps the token in the fragment, which the browser does not send; join.js moves it into
the form. So no token reaches an access log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from rlhf_lab.annotate import crud
from rlhf_lab.annotate.deps import CSRF, CtxDep, MaybePrincipal, client_key
from rlhf_lab.annotate.security import SESSION_COOKIE, cookie_header, hash_token

router = APIRouter()


class TokenIn(BaseModel):
    token: str = Field(min_length=1, max_length=200)


def _signed_in(response: Response, ctx: CtxDep, session_token: str) -> Response:
    max_age = int(crud.SESSION_TTL.total_seconds())
    response.raw_headers.append((b"set-cookie", cookie_header(SESSION_COOKIE, session_token, max_age=max_age,
                                                              secure=ctx.secure_cookies)))
    return response


async def _redeem(request: Request, ctx: CtxDep, token: str, redeem) -> str:
    """A session token for a valid `token`. A client address with too many recent failures gets 429 for
    a wrong token, yet a valid one still signs in: people behind the same proxy as a guesser share its
    address, and a 256-bit token is not guessed anyway. Failures while blocked are not counted, so a
    block lasts at most one window (see RateLimiter)."""
    key = client_key(request)
    session_token = await ctx.writer.run(lambda s: redeem(s, token.strip()))
    if session_token is not None:
        return session_token
    if ctx.sign_in_limiter.blocked(key):
        raise HTTPException(429, "too many failed sign-in attempts; wait a minute and try again")
    ctx.sign_in_limiter.fail(key)
    raise HTTPException(401, "this link or token is unknown, used or expired; ask the admin for a new one")


@router.get("/")
async def home(who: MaybePrincipal) -> Response:
    if who is None:
        return RedirectResponse("/login", status_code=303)
    return RedirectResponse("/admin" if who.role == "admin" else "/label", status_code=303)


@router.get("/login")
async def login_page(request: Request, ctx: CtxDep) -> Response:
    return ctx.templates.TemplateResponse(request, "login.html", {})


@router.post("/login", dependencies=[CSRF])
async def login(request: Request, ctx: CtxDep, token: Annotated[str, Form(max_length=200)]) -> Response:
    session_token = await _redeem(request, ctx, token, crud.redeem_admin_token)
    return _signed_in(RedirectResponse("/admin", status_code=303), ctx, session_token)


@router.post("/api/login", dependencies=[CSRF])
async def api_login(request: Request, ctx: CtxDep, body: TokenIn) -> Response:
    session_token = await _redeem(request, ctx, body.token, crud.redeem_admin_token)
    return _signed_in(JSONResponse({"role": "admin"}), ctx, session_token)


@router.get("/join")
async def join_page(request: Request, ctx: CtxDep) -> Response:
    return ctx.templates.TemplateResponse(request, "join.html", {})


@router.post("/join", dependencies=[CSRF])
async def join(request: Request, ctx: CtxDep, token: Annotated[str, Form(max_length=200)]) -> Response:
    session_token = await _redeem(request, ctx, token, crud.redeem_invite)
    return _signed_in(RedirectResponse("/label", status_code=303), ctx, session_token)


@router.post("/api/join", dependencies=[CSRF])
async def api_join(request: Request, ctx: CtxDep, body: TokenIn) -> Response:
    session_token = await _redeem(request, ctx, body.token, crud.redeem_invite)
    return _signed_in(JSONResponse({"role": "annotator"}), ctx, session_token)


@router.post("/logout", dependencies=[CSRF])
async def logout(request: Request, ctx: CtxDep) -> Response:
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        digest = hash_token(token)
        await ctx.writer.run(lambda s: crud.end_session(s, digest))
        ctx.forget_session(digest)
    response = RedirectResponse("/login", status_code=303)
    response.raw_headers.append((b"set-cookie", cookie_header(SESSION_COOKIE, "", max_age=0,
                                                              secure=ctx.secure_cookies)))
    return response


@router.get("/api/csrf")
async def csrf_token(request: Request) -> dict:
    """The CSRF token for API clients (the cookie comes with this response)."""
    return {"csrf_token": request.state.csrf}
