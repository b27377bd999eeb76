"""`rlhf-lab annotate …`: serve the web app, import a pair file as a project, export a project's labels.

Mounted by the main CLI as `app.add_typer(annotate_app, name="annotate")`; also runs on its own as
`python -m rlhf_lab.annotate.cli`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rlhf_lab.annotate.export import FORMATS, export_project, run_pairs
from rlhf_lab.annotate.importing import ImportFileError, read_pairs_file
from rlhf_lab.annotate.server import resolve_store_url
from rlhf_lab.annotate.server import serve as serve_app
from rlhf_lab.annotate.store import FEEDBACK_MODES, AnnotationStore
from rlhf_lab.runfolder import RunFolder

annotate_app = typer.Typer(help="The annotation web app: people compare pairs of responses in a browser.",
                           no_args_is_help=True, add_completion=False)

RunOpt = Annotated[Path | None, typer.Option("--run", help="Run folder: its labels.sqlite is the store.")]
DbOpt = Annotated[str | None, typer.Option("--db", help="Store URL instead, e.g. "
                                           "postgresql+psycopg://user:pass@host/db or sqlite:///labels.sqlite.")]


def _store_url(run: Path | None, db: str | None) -> str:
    try:
        return resolve_store_url(run=run, db=db)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None


@annotate_app.command()
def serve(run: RunOpt = None, db: DbOpt = None,
          host: Annotated[str, typer.Option(help="Address to listen on (loopback by default).")] = "127.0.0.1",
          port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
          workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes.")] = 1,
          secure_cookies: Annotated[bool, typer.Option(help="Mark cookies Secure (serve behind HTTPS).")] = False,
          access_log: Annotated[bool, typer.Option(help="Log each request (never with tokens).")] = True,
          forwarded_allow_ips: Annotated[str | None, typer.Option(
              help="Reverse proxies (comma-separated addresses, or '*') whose X-Forwarded-For is believed; "
                   "by default none is.")] = None) -> None:
    """Start the app and print the admin URL with a one-time admin token."""
    serve_app(_store_url(run, db), host=host, port=port, run_dir=run, workers=workers,
              secure_cookies=secure_cookies, access_log=access_log, forwarded_allow_ips=forwarded_allow_ips)


@annotate_app.command("import")
def import_pairs(file: Annotated[Path, typer.Argument(help="JSONL: prompt, response_a, response_b per line.")],
                 run: RunOpt = None, db: DbOpt = None,
                 project: Annotated[str, typer.Option(help="Name of the new project.")] = "imported",
                 overlap: Annotated[int, typer.Option(min=1, max=32, help="Labels per pair.")] = 1,
                 gold_rate: Annotated[float, typer.Option(min=0.0, max=0.99, help="Share of gold checks.")] = 0.0,
                 feedback: Annotated[str, typer.Option(help="foresight | hindsight.")] = "foresight",
                 guidelines: Annotated[Path | None, typer.Option(help="Markdown file of guidelines.")] = None) -> None:
    """Create a project from a pair file; a malformed file is rejected whole, naming file and line."""
    if feedback not in FEEDBACK_MODES:
        raise typer.BadParameter(f"--feedback must be one of {', '.join(FEEDBACK_MODES)}")
    try:
        items = read_pairs_file(file)
    except ImportFileError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    store = AnnotationStore(_store_url(run, db))
    try:
        if store.project(project) is not None:
            typer.echo(f"error: a project named {project!r} exists already", err=True)
            raise typer.Exit(2)
        text = guidelines.read_text(encoding="utf-8") if guidelines else ""
        p = store.create_project_with_items(project, items, guidelines=text, overlap=overlap, gold_rate=gold_rate,
                                            feedback_mode=feedback, source=str(file))
    finally:
        store.close()
    n_gold = sum(1 for it in items if it["is_gold"])
    typer.echo(f"Imported {len(items)} pairs ({n_gold} gold checks) into project {p.name!r} (id {p.id}).")


@annotate_app.command()
def export(run: RunOpt = None, db: DbOpt = None,
           project: Annotated[str, typer.Option(help="Project name.")] = "run",
           out: Annotated[Path | None, typer.Option(help="Folder to write into (default: the run folder).")] = None,
           fmt: Annotated[str, typer.Option("--format", help="standard: TRL's prompt/chosen/rejected text; "
                                            "conversational: also preferences_conversational.jsonl (messages).")]
           = "standard",
           ) -> None:
    """Write preferences (per annotator and majority), labels.jsonl and agreement.json."""
    if fmt not in FORMATS:
        raise typer.BadParameter(f"--format must be one of {', '.join(FORMATS)}")
    folder = out or run
    if folder is None:
        raise typer.BadParameter("with --db, say where to write with --out DIR")
    store = AnnotationStore(_store_url(run, db))
    try:
        p = store.project(project)
        if p is None:
            typer.echo(f"error: no project named {project!r}", err=True)
            raise typer.Exit(2)
        rows = store.label_rows(p.id, export=True)
        pairs = run_pairs(run)
        # into a run folder, new preferences make its reward model and everything after it stale
        paths = RunFolder(folder).replace_preferences(lambda d: export_project(rows, d, pairs=pairs, fmt=fmt))
    finally:
        store.close()
    typer.echo("Wrote " + ", ".join(str(path) for path in paths))


if __name__ == "__main__":
    annotate_app()
