"""Regenerate the docs' tables of measured figures from the run folders and benchmark outputs they came from.

    python benchmarks/measured.py                 # rewrite every block whose source exists
    python benchmarks/measured.py --check         # list blocks whose source is missing, whose table is not the one
                                                  # their source builds, or whose stamp is stale
    python benchmarks/measured.py --only NAME --source NAME=/elsewhere/seed-* [FILE ...]

A table of measured figures lives between two markers, the first naming where it came from:

    <!-- measured: NAME kind=KIND source="runs/…" cmd="what produced the source" commit=abc1234 date=2026-11-30 -->
    | … the table … |
    <!-- /measured -->

kind says how the block is built from its source: `instrument` and `seeds` from run folders (the tables of
summarise_instrument.py and summarise_runs.py); `default_run`, `annotate_load`, `generation` and `sft_knowledge`
from the --json files of run_default.py, annotate_load.py, bench_generation.py and sft_knowledge.py;
`scoreboard` from the scoreboard.json of `rlhf-lab warnings-scoreboard`; `manual`:
no generator, the table was written by hand from `cmd`'s output. source is a path or glob relative to the
repository root; commit and date are the stamp: the code that measured the figures and the day it did.
Optional: code="PATHS" — what the figures measure, comma-separated (default src/rlhf_lab); --check calls a block
stale when a commit after its stamp touched those paths. A regenerated block is stamped with the commit its
source names (a benchmark's JSON records it) or else HEAD (give --commit when the runs are older than HEAD), and
the date its source was measured. A malformed marker is one line naming its file and line, exit 2, nothing
written."""

from __future__ import annotations

import argparse
import glob
import json
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from figures import (
    annotate_load_table,
    default_run_table,
    generation_table,
    instrument_row,
    instrument_summary,
    instrument_table,
    run_date,
    seeds_table,
    sft_knowledge_table,
)

ROOT = Path(__file__).resolve().parent.parent
DOCS = ["README.md", "ARCHITECTURE.md", "docs/*.md", "benchmarks/README.md"]
OPEN = re.compile(r"^<!-- measured: (?P<body>.*) -->\s*$")
CLOSE = re.compile(r"^<!-- /measured -->\s*$")
KEYS = {"kind", "source", "cmd", "commit", "date", "code"}


class MarkerError(ValueError):
    """A malformed marker, as 'FILE:LINE: what is wrong'."""


@dataclass
class Block:
    file: Path
    line: int  # 1-based line of the opening marker
    end: int  # 1-based line of the closing marker
    name: str
    attrs: dict[str, str] = field(default_factory=dict)
    shown: str = ""  # the file as messages name it

    @property
    def where(self) -> str:
        return f"{self.shown or self.file}:{self.line}"


# ---------------------------------------------------------------- kinds: a source → the block's lines, date, commit

def _instrument(paths: list[Path]) -> tuple[list[str], str | None, str | None]:
    rows = [instrument_row(r) for r in paths]
    lines = instrument_table(rows, name=lambda r: Path(r["run"]).name)
    return [*lines, "", f"Over the {len(rows)} runs: {instrument_summary(rows)}"], _latest(paths), None


def _seeds(paths: list[Path]) -> tuple[list[str], str | None, str | None]:
    return seeds_table(paths), _latest(paths), None


def _default_run(paths: list[Path]) -> tuple[list[str], str | None, str | None]:
    docs = [json.loads(p.read_text()) for p in paths]
    records = [r for d in docs for r in d["runs"]]
    return default_run_table(records), max(d["date"] for d in docs), docs[-1].get("commit")


def _annotate_load(paths: list[Path]) -> tuple[list[str], str | None, str | None]:
    docs = [json.loads(p.read_text()) for p in paths]  # one row per file, in the order of their names
    return annotate_load_table([d["row"] for d in docs]), max(d["date"] for d in docs), docs[-1].get("commit")


def _generation(paths: list[Path]) -> tuple[list[str], str | None, str | None]:
    doc = json.loads(paths[-1].read_text())
    return generation_table(doc), doc.get("date"), doc.get("commit")


def _sft_knowledge(paths: list[Path]) -> tuple[list[str], str | None, str | None]:
    docs = [json.loads(p.read_text()) for p in paths]  # one row per file, in the order of their names
    return sft_knowledge_table(docs), max(d["date"] for d in docs), docs[-1].get("commit")


def _scoreboard(paths: list[Path]) -> tuple[list[str], str | None, str | None]:
    from rlhf_lab.warnings_scoreboard import calibration_markdown, table_markdown

    doc = json.loads(paths[-1].read_text())
    board = doc["detectors"]
    return ([*table_markdown(board, doc).splitlines(), "", "Each detector's grid on the calibration runs (on time / "
             "false alarms / runs warned; the chosen threshold is in the table above):", "",
             *calibration_markdown(board).splitlines()], doc.get("date"), doc.get("commit"))


def _latest(runs: list[Path]) -> str | None:
    dates = [d for d in map(run_date, runs) if d]
    return max(dates) if dates else None


def _finished_run(p: Path) -> bool:
    return (p / "audit.json").is_file()


# kind → (which paths of the source glob count, how the block is built from them); manual: no generator
KINDS = {
    "instrument": (_finished_run, _instrument),
    "seeds": (_finished_run, _seeds),
    "default_run": (Path.is_file, _default_run),
    "annotate_load": (Path.is_file, _annotate_load),
    "generation": (Path.is_file, _generation),
    "sft_knowledge": (Path.is_file, _sft_knowledge),
    "scoreboard": (Path.is_file, _scoreboard),
    "manual": (Path.exists, None),
}


# ---------------------------------------------------------------- markers

def parse(path: Path, text: str, *, shown: str) -> list[Block]:
    """Every block of one file; a malformed marker raises MarkerError naming `shown`:LINE."""
    blocks: list[Block] = []
    current: Block | None = None
    fenced = False
    for i, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("```"):
            fenced = not fenced
        if fenced or len(line) - len(line.lstrip(" ")) >= 4:  # code: an example of a marker, not one
            continue
        if CLOSE.match(stripped):
            if current is None:
                raise MarkerError(f"{shown}:{i}: <!-- /measured --> without an opening marker")
            current.end = i
            blocks.append(current)
            current = None
        elif "<!-- measured" in stripped or "<!-- /measured" in stripped:
            m = OPEN.match(stripped)
            if m is None:
                raise MarkerError(f"{shown}:{i}: malformed marker; write <!-- measured: NAME kind=… source=… cmd=… -->")
            if current is not None:
                raise MarkerError(f"{shown}:{i}: marker opened inside block {current.name!r} (line {current.line}), "
                                  "which is not closed")
            current = Block(path, i, 0, *_attrs(m["body"], where=f"{shown}:{i}"), shown=shown)
    if current is not None:
        raise MarkerError(f"{shown}:{current.line}: block {current.name!r} is not closed with <!-- /measured -->")
    return blocks


def _attrs(body: str, *, where: str) -> tuple[str, dict[str, str]]:
    try:
        tokens = shlex.split(body)
    except ValueError as e:
        raise MarkerError(f"{where}: marker does not parse ({e})") from None
    if not tokens or "=" in tokens[0]:
        raise MarkerError(f"{where}: marker has no NAME before its key=value pairs")
    name, attrs = tokens[0], {}
    for tok in tokens[1:]:
        key, eq, value = tok.partition("=")
        if not eq or key not in KEYS:
            raise MarkerError(f"{where}: {tok!r} is not one of {', '.join(sorted(KEYS))} as key=value")
        attrs[key] = value
    kind = attrs.get("kind")
    if kind not in KINDS:
        raise MarkerError(f"{where}: kind={kind} is not one of {', '.join(KINDS)}")
    for key in ("cmd",) + (("source",) if kind != "manual" else ()):
        if not attrs.get(key):
            raise MarkerError(f"{where}: {key}= is missing (kind={kind} needs it)")
    if "commit" in attrs and not re.fullmatch(r"[0-9a-f]{7,40}(\+dirty)?", attrs["commit"]):
        raise MarkerError(f"{where}: commit={attrs['commit']} is not a commit hash")
    if "date" in attrs and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", attrs["date"]):
        raise MarkerError(f"{where}: date={attrs['date']} is not YYYY-MM-DD")
    return name, attrs


def _quote(v: str) -> str:
    if re.fullmatch(r"[\w.,/:@+=-]+", v):
        return v
    return f'"{v}"' if '"' not in v and "\\" not in v else shlex.quote(v)


def marker(block: Block) -> str:
    parts = [block.name] + [f"{k}={_quote(v)}" for k in ("kind", "source", "cmd", "code", "commit", "date")
                            if (v := block.attrs.get(k))]
    return f"<!-- measured: {' '.join(parts)} -->"


def read_blocks(files: list[Path], root: Path) -> dict[Path, list[Block]]:
    out: dict[Path, list[Block]] = {}
    seen: dict[str, Block] = {}
    built_from: dict[tuple[str, str], Block] = {}
    for f in files:
        shown = str(f.relative_to(root)) if f.is_relative_to(root) else str(f)
        out[f] = parse(f, f.read_text(), shown=shown)
        for b in out[f]:
            if b.name in seen:
                raise MarkerError(f"{shown}:{b.line}: block name {b.name!r} is also used at {seen[b.name].where}")
            seen[b.name] = b
            # two blocks built from one source are one table: a second one (say, figures of earlier defaults
            # kept beside new ones) would be silently overwritten with the first's figures
            key = (b.attrs["kind"], b.attrs.get("source", ""))
            if key[0] != "manual" and key in built_from:
                raise MarkerError(f"{shown}:{b.line}: block {b.name!r} has the kind and source of "
                                  f"{built_from[key].name!r} at {built_from[key].where}; give it its own source")
            built_from[key] = b
    return out


# ---------------------------------------------------------------- sources and stamps

def sources(block: Block, root: Path, overrides: dict[str, str]) -> list[Path]:
    pattern = overrides.get(block.name, block.attrs.get("source", ""))
    if not pattern:
        return []
    full = pattern if Path(pattern).is_absolute() else str(root / pattern)
    usable = KINDS[block.attrs["kind"]][0]
    return sorted(p for p in map(Path, glob.glob(full)) if usable(p))


def git(root: Path, *args: str) -> str | None:
    r = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else None


def staleness(block: Block, root: Path) -> str | None:
    """Why the block's stamp is older than the code it measures, or None when it is current."""
    commit = block.attrs.get("commit")
    if not commit:
        return "no commit in its stamp"
    if commit.endswith("+dirty"):
        return f"measured with uncommitted changes to {commit.removesuffix('+dirty')}"
    if git(root, "cat-file", "-e", f"{commit}^{{commit}}") is None:
        return f"its commit {commit} is not in this repository's history"
    # code committed after the day of the measurement cannot have made it (e.g. HEAD stamped on older runs)
    made = git(root, "show", "-s", "--format=%cs", commit)
    if made and block.attrs.get("date") and made > block.attrs["date"]:
        return f"its commit {commit} ({made}) is newer than its figures ({block.attrs['date']}); give --commit"
    paths = block.attrs.get("code", "src/rlhf_lab").split(",")
    later = git(root, "log", "--format=%h %ad", "--date=short", f"{commit}..HEAD", "--", *paths)
    if later:
        lines = later.splitlines()
        return f"{len(lines)} commit(s) to {','.join(paths)} since {commit} (latest {lines[0]})"
    return None


def _out_of_date(block: Block, paths: list[Path]) -> str | None:
    """Why the block's table is not the one its source builds (a hand edit, or runs redone since), or None."""
    try:
        built, _, _ = KINDS[block.attrs["kind"]][1](paths)
    except (KeyError, TypeError, ValueError, OSError) as e:
        return f"cannot build from {paths[0]}…: {type(e).__name__} {e}"
    if block.file.read_text().splitlines()[block.line:block.end - 1] != built:
        return "its table differs from what its source builds; run measured.py to rewrite it"
    return None


def check(blocks: list[Block], root: Path, overrides: dict[str, str]) -> int:
    flagged = 0
    for b in blocks:
        reasons = []
        if b.attrs["kind"] == "manual":
            reasons.append("written by hand (no generator)")
        elif not (paths := sources(b, root, overrides)):
            reasons.append(f"source missing ({overrides.get(b.name, b.attrs['source'])}); produce it with: "
                           f"{b.attrs['cmd']}")
        elif why := _out_of_date(b, paths):
            reasons.append(why)
        if why := staleness(b, root):
            reasons.append(f"stale: {why}")
        if reasons:
            flagged += 1
            print(f"{b.where}: {b.name}: " + "; ".join(reasons))
    print(f"{flagged} of {len(blocks)} blocks flagged")
    return 1 if flagged else 0


def regenerate(blocks: list[Block], root: Path, overrides: dict[str, str], commit: str | None) -> dict[Path, str]:
    """The new text of every file with a block whose source exists (blocks without one are kept as they are)."""
    by_file: dict[Path, list[tuple[Block, list[str]]]] = {}
    for b in blocks:
        build = KINDS[b.attrs["kind"]][1]
        paths = sources(b, root, overrides)
        if build is None or not paths:
            print(f"kept {b.where} {b.name} ({'by hand' if build is None else 'source missing'})")
            continue
        try:
            lines, date, source_commit = build(paths)
        except (KeyError, TypeError, ValueError, OSError) as e:
            raise MarkerError(f"{b.where}: {b.name}: cannot build from {paths[0]}…: {type(e).__name__} {e}") from None
        b.attrs["commit"] = commit or source_commit or git(root, "rev-parse", "--short", "HEAD") or "unknown"
        if b.attrs["commit"] == "unknown":  # not a hash: the marker would no longer parse
            raise MarkerError(f"{b.where}: {b.name}: no commit to stamp (not a git checkout): give --commit")
        if date:
            b.attrs["date"] = date
        by_file.setdefault(b.file, []).append((b, [marker(b), *lines, "<!-- /measured -->"]))
        print(f"regenerated {b.where} {b.name} from {len(paths)} source(s)")
    texts = {}
    for f, items in by_file.items():
        # Read and parse again: others may have edited the file since, so locate each block by its name now.
        text = f.read_text()
        now = {b.name: b for b in parse(f, text, shown=str(f))}
        lines = text.splitlines()
        for b, new in sorted(items, key=lambda it: -now[it[0].name].line):  # bottom up: line numbers stay valid
            lines[now[b.name].line - 1:now[b.name].end] = new
        texts[f] = "\n".join(lines) + "\n"
    return texts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="*", type=Path, help=f"Markdown files (default: {' '.join(DOCS)}).")
    ap.add_argument("--check", action="store_true", help="List blocks whose source is missing, whose table "
                    "differs from what their source builds, or whose stamp is stale.")
    ap.add_argument("--only", action="append", default=[], metavar="NAME", help="Only these blocks (repeatable).")
    ap.add_argument("--source", action="append", default=[], metavar="NAME=PATH",
                    help="Read block NAME from PATH (a glob) instead of its marker's source; not written back.")
    ap.add_argument("--commit", help="Stamp regenerated blocks with this commit (the code that produced the runs).")
    ap.add_argument("--root", type=Path, default=ROOT, help="Repository root (sources and git resolve here).")
    args = ap.parse_args(argv)
    root = args.root.resolve()
    files = [f.resolve() for f in args.files] or sorted({Path(p) for pat in DOCS for p in glob.glob(str(root / pat))})
    if bad := [s for s in args.source if "=" not in s]:
        print(f"--source {bad[0]}: write NAME=PATH", file=sys.stderr)
        return 2
    overrides = dict(s.split("=", 1) for s in args.source)
    try:
        blocks = [b for bs in read_blocks(files, root).values() for b in bs if not args.only or b.name in args.only]
    except MarkerError as e:
        print(e, file=sys.stderr)
        return 2
    if unknown := (set(args.only) | set(overrides)) - {b.name for b in blocks}:
        print(f"no block named {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    if args.check:
        return check(blocks, root, overrides)
    try:
        texts = regenerate(blocks, root, overrides, args.commit)
    except MarkerError as e:
        print(e, file=sys.stderr)
        return 2
    for f, text in texts.items():
        tmp = f.with_suffix(f.suffix + ".tmp")
        tmp.write_text(text)
        tmp.replace(f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
