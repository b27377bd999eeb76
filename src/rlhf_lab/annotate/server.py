"""Running the app: `serve` prints the admin URL with a fresh one-time admin token, then runs uvicorn."""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from rlhf_lab.annotate import crud
from rlhf_lab.annotate.app import create_app
from rlhf_lab.annotate.store import AnnotationStore, url_for_run
from rlhf_lab.ui import info


class StripQueryFilter(logging.Filter):
    """Drops the query string from uvicorn's access log lines. The app never puts a token in a URL the
    server sees; this makes sure a client that does anyway leaves no token in the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (*args[:2], args[2].split("?", 1)[0], *args[3:])
        return True


def log_config(*, access_log: bool = True) -> dict:
    cfg = copy.deepcopy(LOGGING_CONFIG)
    cfg.setdefault("filters", {})["strip_query"] = {"()": f"{__name__}.StripQueryFilter"}
    cfg["handlers"]["access"]["filters"] = ["strip_query"]
    if not access_log:
        cfg["loggers"]["uvicorn.access"]["level"] = "WARNING"
    return cfg


def resolve_store_url(*, run: str | Path | None = None, db: str | None = None) -> str:
    """`--run DIR` (the run's labels.sqlite) or `--db URL`, exactly one."""
    if (run is None) == (db is None):
        raise ValueError("give exactly one of --run DIR (the run folder's labels.sqlite) or --db URL")
    if run is not None:
        if not Path(run).is_dir():
            raise ValueError(f"{run}: no such run folder")
        return url_for_run(run)
    return db


def serve(store_url: str, host: str = "127.0.0.1", port: int = 8000, *, run_dir: str | Path | None = None,
          workers: int = 1, secure_cookies: bool = False, access_log: bool = True,
          forwarded_allow_ips: str | None = None) -> None:
    """Serve the annotation app over the store at `store_url` until interrupted.

    Prints the admin URL carrying a new one-time admin token (after '#', so it never reaches a log).
    `workers` > 1 runs several uvicorn processes (each has its own rate-limit counts).
    `forwarded_allow_ips`: comma-separated addresses of reverse proxies whose X-Forwarded-For and
    X-Forwarded-Proto are believed ("*" for any). None: no proxy is trusted, the client address is the
    peer's — uvicorn's own default trusts 127.0.0.1, which lets any local client forge its address.
    """
    store = AnnotationStore(store_url)
    token = crud.issue_admin_token(store)
    store.close()
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    # plain print, never wrapped: the link must stay copyable in one piece
    print(f"rlhf-lab annotate on http://{shown_host}:{port}  (store: {_redacted(store_url)})", flush=True)
    print(f"Admin: open http://{shown_host}:{port}/login#{token}", flush=True)
    print(f"  or sign in at /login with the one-time admin token {token}", flush=True)
    if host not in ("127.0.0.1", "localhost", "::1") and not secure_cookies:
        info("[yellow]Listening beyond this machine without HTTPS: put it behind a TLS proxy and pass "
             "--secure-cookies.[/]")
    kwargs = dict(host=host, port=port, log_config=log_config(access_log=access_log), access_log=access_log,
                  server_header=False, proxy_headers=bool(forwarded_allow_ips),
                  forwarded_allow_ips=forwarded_allow_ips or "")
    if workers > 1:
        os.environ["RLHF_LAB_ANNOTATE_DB"] = store_url
        os.environ["RLHF_LAB_ANNOTATE_RUN"] = str(run_dir or "")
        os.environ["RLHF_LAB_ANNOTATE_SECURE"] = "1" if secure_cookies else "0"
        os.environ["RLHF_LAB_ANNOTATE_WORKERS"] = str(workers)
        uvicorn.run("rlhf_lab.annotate.app:app_from_env", factory=True, workers=workers, **kwargs)
    else:
        uvicorn.run(create_app(store_url, run_dir=run_dir, secure_cookies=secure_cookies), **kwargs)


def _redacted(url: str) -> str:
    """The store URL without its password."""
    if "://" in url and "@" in url:
        scheme, rest = url.split("://", 1)
        creds, where = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{where}"
    return url
