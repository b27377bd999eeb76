"""The annotation web app: `create_app(store_url)` builds it; `serve` (server.py) runs it with uvicorn.

    app.py        this factory, the middleware and the error pages
    routes/       auth (sign-in), annotator (queue, labels), admin (projects, invites, dashboard, export)
    crud.py       queries; queue.py the assignment rules; writer.py group commit
    security.py   tokens, CSRF, rate limits, headers; agreement.py the metrics
    templates/    Jinja2, autoescaped; static/ CSS and JS, served from here (no CDN, works offline)

The app imports no torch and no training code.
"""

from __future__ import annotations

import os
import re
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from markdown_it import MarkdownIt
from markupsafe import Markup

from rlhf_lab.annotate.deps import PRINCIPAL_CACHE_S, AppContext, principal_for
from rlhf_lab.annotate.queue import Rejected
from rlhf_lab.annotate.routes import admin, annotator, auth
from rlhf_lab.annotate.security import SESSION_COOKIE, RateLimiter, SecurityMiddleware
from rlhf_lab.annotate.store import AnnotationStore
from rlhf_lab.annotate.writer import GroupCommitWriter

HERE = Path(__file__).parent
MAX_BODY = 64 * 1024  # bytes in any request but an upload
MAX_UPLOAD = 50 * 1024 * 1024  # bytes in an import upload
# The routes that take a file upload, matched whole (a prefix would open the larger limit to any path
# that starts alike). Only the admin may send them, checked before the body is read.
UPLOAD_ROUTES = (re.compile(r"/admin/projects"), re.compile(r"/admin/projects/[0-9]{1,10}/(items|outcomes)"))

# Guidelines are Markdown written by the admin; raw HTML in them is escaped, and markdown-it refuses
# javascript:/vbscript:/data: links.
_markdown = MarkdownIt("commonmark", {"html": False})


def render_markdown(text: str) -> Markup:
    return Markup(_markdown.render(text or ""))


class _App(FastAPI):
    """FastAPI with SecurityMiddleware (settings in `security`) outside Starlette's error middleware, so a
    500 answer carries the security headers too; `add_middleware` would put it inside."""

    security: dict

    def build_middleware_stack(self):
        return SecurityMiddleware(super().build_middleware_stack(), **self.security)


def create_app(store_url: str, *, run_dir: str | Path | None = None, secure_cookies: bool = False,
               max_body: int = MAX_BODY, max_upload: int = MAX_UPLOAD, sign_in_failures: int = 10,
               sign_in_window_s: float = 60.0, principal_cache_s: float = PRINCIPAL_CACHE_S) -> FastAPI:
    """The app over the store at `store_url`. `run_dir`: the run folder served (enables "create from the
    run's pairs" and "export into the run"). `secure_cookies`: set the Secure flag (serve behind HTTPS).
    `sign_in_failures` failed sign-ins per client address per `sign_in_window_s` seconds, then 429.
    `principal_cache_s`: see `AppContext` (0 when several worker processes serve the same store)."""
    store = AnnotationStore(store_url)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.filters["markdown"] = render_markdown
    ctx = AppContext(store=store, writer=GroupCommitWriter(store), templates=templates,
                     sign_in_limiter=RateLimiter(limit=sign_in_failures, window_s=sign_in_window_s),
                     secure_cookies=secure_cookies, run_dir=Path(run_dir) if run_dir else None,
                     principal_cache_s=principal_cache_s)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        ctx.writer.close()
        store.close()

    app = _App(title="rlhf-lab annotate", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.ctx = ctx

    async def admin_only(scope) -> tuple[int, str] | None:
        who = await principal_for(ctx, Request(scope).cookies.get(SESSION_COOKIE))
        if who is None:
            return 401, "not signed in"
        return None if who.role == "admin" else (403, "this page is for the admin only")

    app.security = dict(max_body=max_body, max_upload=max_upload, upload_routes=UPLOAD_ROUTES,
                        authorize_upload=admin_only, secure_cookies=secure_cookies)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.include_router(auth.router)
    app.include_router(annotator.router)
    app.include_router(admin.router)

    def error(request: Request, status: int, detail: str) -> Response:
        if request.url.path.startswith("/api/") or "application/json" in request.headers.get("accept", ""):
            return JSONResponse({"detail": detail}, status_code=status)
        return templates.TemplateResponse(request, "error.html", {"status": status, "detail": detail},
                                          status_code=status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        return error(request, exc.status_code, str(exc.detail))

    @app.exception_handler(Rejected)
    async def rejected(request: Request, exc: Rejected) -> Response:
        return error(request, exc.status, exc.detail)

    @app.exception_handler(Exception)
    async def failed(request: Request, exc: Exception) -> Response:  # logged by uvicorn with its traceback
        return error(request, 500, "internal error: the server's log has the details")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return error(request, 422, f"{where}: {first.get('msg', 'invalid request')}")

    return app


def app_from_env() -> FastAPI:
    """For `uvicorn --factory` with several workers: the settings come from environment variables. No
    session cache unless RLHF_LAB_ANNOTATE_WORKERS is "1": a worker cannot evict another's, and disabling
    someone must hold on their next request. A single process evicts its own cache, so it keeps one (the
    lookup it saves is most of a label's CPU beyond the write)."""
    single = os.environ.get("RLHF_LAB_ANNOTATE_WORKERS") == "1"
    return create_app(os.environ["RLHF_LAB_ANNOTATE_DB"], run_dir=os.environ.get("RLHF_LAB_ANNOTATE_RUN") or None,
                      secure_cookies=os.environ.get("RLHF_LAB_ANNOTATE_SECURE") == "1",
                      sign_in_failures=int(os.environ.get("RLHF_LAB_ANNOTATE_SIGN_IN_FAILURES", "10")),
                      principal_cache_s=PRINCIPAL_CACHE_S if single else 0.0)
