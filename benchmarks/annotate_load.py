"""Loopback load test of the annotation app: N concurrent annotators label as fast as the server answers.

    python benchmarks/annotate_load.py                       # SQLite in a temporary folder
    python benchmarks/annotate_load.py --db pg               # PostgreSQL at $RLHF_LAB_TEST_PG_URL
    python benchmarks/annotate_load.py --db postgresql+psycopg://u:p@127.0.0.1/db --workers 2

Each annotator is a thread with one keep-alive connection (stdlib http.client, the lightest client, since
client and server share the machine's cores): it joins through its invite, then posts labels, each
answer carrying its next pair. Reports submissions/s, p50/p99 latency of a submission, and checks the
store afterwards: every acknowledged label is there exactly once, and no pair has more than `overlap`
labels. Bounded: --annotators threads for --seconds seconds. Not a test: see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from figures import annotate_load_row, stamp
from sqlalchemy import func, select

from rlhf_lab.annotate import crud
from rlhf_lab.annotate.store import AnnotationStore, Base, Item, Label


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare(url: str, *, annotators: int, items: int, overlap: int) -> list[str]:
    """A fresh project with `items` pairs and one invite per annotator; returns the invite tokens."""
    store = AnnotationStore(url)
    if not url.startswith("sqlite"):
        Base.metadata.drop_all(store.engine)
        Base.metadata.create_all(store.engine)
    p = store.create_project_with_items("bench", [
        {"uid": f"p{i}", "prompt": f"what is {i} plus {i} ?", "response_a": f"{2 * i} .",
         "response_b": f"i think it is {2 * i + 1} ."} for i in range(items)], overlap=overlap)
    with store.session() as s:
        tokens = [crud.create_invite(s, project_id=p.id, name=f"a{k}") for k in range(annotators)]
    store.close()
    return tokens


def start_server(url: str, port: int, workers: int) -> subprocess.Popen:
    # the worker count tells the app whether it may keep its session cache (one process only)
    env = {**os.environ, "RLHF_LAB_ANNOTATE_DB": url, "RLHF_LAB_ANNOTATE_SIGN_IN_FAILURES": "1000",
           "RLHF_LAB_ANNOTATE_WORKERS": str(workers)}
    cmd = [sys.executable, "-m", "uvicorn", "--factory", "rlhf_lab.annotate.app:app_from_env", "--host",
           "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level", "warning", "--workers", str(workers)]
    proc = subprocess.Popen(cmd, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the server did not start within 30 s")


class Annotator(threading.Thread):
    """One annotator. `interval` 0: submit as fast as answers come (closed loop). Else submit on a fixed
    schedule, one label every `interval` seconds, and time each from its scheduled moment, so a slow answer
    also counts against the submissions queued behind it (no coordinated omission)."""

    def __init__(self, port: int, token: str, stop_at: float, interval: float):
        super().__init__(daemon=True)
        self.port, self.token, self.stop_at, self.interval = port, token, stop_at, interval
        self.latencies: list[float] = []
        self.acked: list[str] = []
        self.errors: list[str] = []
        self.cookies: dict[str, str] = {}

    def request(self, conn, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        if body is not None:
            headers.update({"Content-Type": "application/json", "X-CSRF-Token": self.cookies.get("rl_csrf", "")})
        conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        r = conn.getresponse()
        data = r.read()
        for key, value in r.getheaders():
            if key.lower() == "set-cookie":
                name, _, rest = value.partition("=")
                self.cookies[name] = rest.split(";", 1)[0]
        return r.status, json.loads(data) if data else {}

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            self.request(conn, "GET", "/api/csrf")
            status, _ = self.request(conn, "POST", "/api/join", {"token": self.token})
            if status != 200:
                self.errors.append(f"join {status}")
                return
            _, out = self.request(conn, "GET", "/api/next")
            assignment = out["assignment"]
            due = time.perf_counter() + self.interval * random.random()  # annotators start out of step
            while assignment is not None and time.monotonic() < self.stop_at:
                cid = secrets.token_hex(16)
                body = {"assignment_id": assignment["assignment_id"], "client_id": cid,
                        "choice": secrets.choice(["left", "right", "tie"]), "strength": "slightly",
                        "time_spent_ms": 1000}
                if self.interval:
                    time.sleep(max(0.0, due - time.perf_counter()))
                    t0 = due
                    due += self.interval
                else:
                    t0 = time.perf_counter()
                status, out = self.request(conn, "POST", "/api/labels", body)
                self.latencies.append(time.perf_counter() - t0)
                if status not in (200, 201):
                    self.errors.append(f"label {status} {out}")
                    return
                self.acked.append(cid)
                assignment = out["assignment"]
        except Exception as e:  # a benchmark reports failures instead of dying on them
            self.errors.append(repr(e))
        finally:
            conn.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its children (uvicorn workers), from /proc (Linux)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat.parent.name) == pid or int(fields[1]) == pid:  # fields[1]: the parent pid
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def verify(url: str, acked: list[str], overlap: int) -> dict:
    store = AnnotationStore(url)
    with store.session() as s:
        stored = set(s.scalars(select(Label.client_id)))
        n_labels = s.scalar(select(func.count()).select_from(Label))
        over = s.scalar(select(func.count()).select_from(
            select(Label.item_id).join(Item, Item.id == Label.item_id).group_by(Label.item_id)
            .having(func.count() > overlap).subquery()))
    store.close()
    return {"lost": sum(1 for c in acked if c not in stored), "duplicated": len(acked) - len(set(acked)),
            "stored": n_labels, "pairs_over_overlap": over}


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", default="sqlite", help="sqlite (a temporary file) | pg ($RLHF_LAB_TEST_PG_URL) | a URL")
    ap.add_argument("--annotators", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    ap.add_argument("--overlap", type=int, default=3)
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--rate", type=float, default=0.0,
                    help="total submissions/s to offer, spread over the annotators; 0 = as fast as possible")
    ap.add_argument("--json", type=Path, default=None, help="Also write the row to this file (for measured.py).")
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory()
    if args.db == "sqlite":
        url = f"sqlite:///{Path(tmp.name) / 'labels.sqlite'}"
    elif args.db == "pg":
        url = os.environ.get("RLHF_LAB_TEST_PG_URL") or sys.exit("--db pg needs RLHF_LAB_TEST_PG_URL")
    else:
        url = args.db
    tokens = prepare(url, annotators=args.annotators, items=args.items, overlap=args.overlap)
    port = free_port()
    server = start_server(url, port, args.workers)
    try:
        stop_at = time.monotonic() + args.seconds
        interval = args.annotators / args.rate if args.rate else 0.0
        threads = [Annotator(port, t, stop_at, interval) for t in tokens]
        cpu0 = cpu_seconds(server.pid)
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=args.seconds + 60)
        elapsed = time.monotonic() - t0
        server_cpu = cpu_seconds(server.pid) - cpu0
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    latencies = [x for t in threads for x in t.latencies]
    acked = [c for t in threads for c in t.acked]
    errors = [e for t in threads for e in t.errors]
    check = verify(url, acked, args.overlap)
    backend = "SQLite (WAL, synchronous=FULL)" if url.startswith("sqlite") else "PostgreSQL"
    offered = f"{args.rate:.0f}/s" if args.rate else "max"
    row = {"store": backend, "workers": args.workers, "annotators": args.annotators, "offered": offered,
           "labels": len(acked), "labels_per_s": len(acked) / elapsed, "p50_ms": 1000 * percentile(latencies, 0.5),
           "p99_ms": 1000 * percentile(latencies, 0.99),
           "server_cpu_ms_per_label": 1000 * server_cpu / max(1, len(acked)),
           "lost": check["lost"], "duplicated": check["duplicated"], "pairs_over_overlap": check["pairs_over_overlap"],
           "errors": len(errors), "load_avg": os.getloadavg()[0]}
    print(annotate_load_row(row))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**stamp(), "row": row}, indent=1))
    if errors:
        print("first errors:", errors[:3], file=sys.stderr)
    tmp.cleanup()


if __name__ == "__main__":
    main()
