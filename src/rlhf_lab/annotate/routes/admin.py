"""The admin's pages and JSON API: projects, guidelines and settings, invites, the dashboard, export."""

from __future__ import annotations

import io
import tempfile
import zipfile
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from rlhf_lab.annotate import crud
from rlhf_lab.annotate.deps import CSRF, AdminDep, CtxDep, StoreId
from rlhf_lab.annotate.export import export_project, run_pairs
from rlhf_lab.annotate.importing import ImportFileError, parse_outcomes, parse_pairs, read_pairs_file
from rlhf_lab.runfolder import RunFolder

router = APIRouter()
Mode = Literal["foresight", "hindsight"]


def _read(ctx, fn):
    def work():
        with ctx.store.session() as s:
            return fn(s)
    return run_in_threadpool(work)


async def _uploaded(file: UploadFile | None) -> tuple[bytes, str] | None:
    if file is None or not file.filename:
        return None
    return await file.read(), Path(file.filename).name


async def _project_or_404(ctx, pid: int) -> None:
    if await run_in_threadpool(ctx.store.project, pid) is None:
        raise HTTPException(404, "no such project")


def _bad_request(e: Exception) -> HTTPException:
    return HTTPException(400, str(e))


# -- pages -----------------------------------------------------------------------------------------------


@router.get("/admin")
async def admin_home(request: Request, ctx: CtxDep, _: AdminDep) -> Response:
    projects = await _read(ctx, crud.project_list)
    has_run_pairs = ctx.run_dir is not None and (ctx.run_dir / "pairs.jsonl").is_file()
    suggested = crud.free_project_name({p["name"] for p in projects}, "run") if has_run_pairs else ""
    return ctx.templates.TemplateResponse(request, "admin_index.html", {
        "projects": projects, "run_dir": ctx.run_dir, "has_run_pairs": has_run_pairs,
        "suggested_name": suggested})


@router.post("/admin/projects", dependencies=[CSRF])
async def create_project(ctx: CtxDep, _: AdminDep, name: Annotated[str, Form(min_length=1, max_length=200)],
                         source: Annotated[Literal["run", "upload"], Form()] = "upload",
                         file: Annotated[UploadFile | None, File()] = None,
                         overlap: Annotated[int, Form(ge=1, le=32)] = 1,
                         gold_rate: Annotated[float, Form(ge=0.0, lt=1.0)] = 0.0,
                         feedback_mode: Annotated[Mode, Form()] = "foresight",
                         guidelines: Annotated[str, Form(max_length=100_000)] = "") -> Response:
    """A project from the served run's pairs.jsonl or an uploaded pair file, all or nothing."""
    try:
        if source == "run":
            if ctx.run_dir is None:
                raise ImportFileError("this server was not started with --run, so there are no run pairs")
            items, origin = read_pairs_file(ctx.run_dir / "pairs.jsonl"), str(ctx.run_dir / "pairs.jsonl")
        else:
            upload = await _uploaded(file)
            if upload is None:
                raise ImportFileError("choose a JSONL file of pairs to upload")
            items, origin = parse_pairs(upload[0], name=upload[1]), upload[1]
    except ImportFileError as e:
        raise _bad_request(e) from None
    if await run_in_threadpool(ctx.store.project, name.strip()) is not None:
        raise HTTPException(409, f"a project named {name.strip()!r} exists already")

    def work() -> int:
        return ctx.store.create_project_with_items(name.strip(), items, guidelines=guidelines, overlap=overlap,
                                                   gold_rate=gold_rate, feedback_mode=feedback_mode,
                                                   source=origin).id

    pid = await run_in_threadpool(work)
    return RedirectResponse(f"/admin/projects/{pid}", status_code=303)


@router.get("/admin/projects/{pid}")
async def project_page(request: Request, ctx: CtxDep, _: AdminDep, pid: StoreId) -> Response:
    try:
        view = await _read(ctx, lambda s: crud.overview(s, pid))
    except LookupError as e:
        raise HTTPException(404, str(e)) from None
    return ctx.templates.TemplateResponse(request, "admin_project.html", {**view, "run_dir": ctx.run_dir})


@router.post("/admin/projects/{pid}/settings", dependencies=[CSRF])
async def save_settings(ctx: CtxDep, _: AdminDep, pid: StoreId,
                        overlap: Annotated[int, Form(ge=1, le=32)],
                        gold_rate: Annotated[float, Form(ge=0.0, lt=1.0)],
                        feedback_mode: Annotated[Mode, Form()],
                        guidelines: Annotated[str, Form(max_length=100_000)] = "") -> Response:
    def op(s) -> None:
        crud.update_project(s, pid, guidelines=guidelines, overlap=overlap, gold_rate=gold_rate,
                            feedback_mode=feedback_mode)
    try:
        await ctx.writer.run(op)
    except LookupError as e:
        raise HTTPException(404, str(e)) from None
    ctx.hints.clear(pid)
    return RedirectResponse(f"/admin/projects/{pid}", status_code=303)


@router.post("/admin/projects/{pid}/items", dependencies=[CSRF])
async def add_items(ctx: CtxDep, _: AdminDep, pid: StoreId, file: Annotated[UploadFile, File()]) -> Response:
    """More pairs (gold checks among them, with `gold_choice`), all or nothing."""
    upload = await _uploaded(file)
    try:
        if upload is None:
            raise ImportFileError("choose a JSONL file of pairs to upload")
        items = parse_pairs(upload[0], name=upload[1])
    except ImportFileError as e:
        raise _bad_request(e) from None
    await _project_or_404(ctx, pid)
    try:
        await run_in_threadpool(ctx.store.add_items, pid, items)
    except Exception as e:  # a pair id that exists already: the store rolled the whole file back
        raise HTTPException(409, f"{upload[1]}: not imported, a pair id is already in the project "
                                 f"({type(e).__name__})") from None
    ctx.hints.clear(pid)
    return RedirectResponse(f"/admin/projects/{pid}", status_code=303)


@router.post("/admin/projects/{pid}/outcomes", dependencies=[CSRF])
async def add_outcomes(ctx: CtxDep, _: AdminDep, pid: StoreId, file: Annotated[UploadFile, File()]) -> Response:
    """Outcome texts for hindsight mode, by pair id, all or nothing."""
    upload = await _uploaded(file)
    try:
        if upload is None:
            raise ImportFileError("choose a JSONL file of outcomes to upload")
        outcomes = parse_outcomes(upload[0], name=upload[1])
        await ctx.writer.run(lambda s: crud.set_outcomes(s, pid, outcomes))
    except (ImportFileError, ValueError) as e:
        raise _bad_request(e) from None
    return RedirectResponse(f"/admin/projects/{pid}", status_code=303)


@router.post("/admin/projects/{pid}/invites", dependencies=[CSRF])
async def invite(request: Request, ctx: CtxDep, _: AdminDep, pid: StoreId,
                 name: Annotated[str, Form(min_length=1, max_length=200)]) -> Response:
    """A one-time invite link, shown once. The token sits after '#', so it never reaches the server's log."""
    try:
        token = await ctx.writer.run(lambda s: crud.create_invite(s, project_id=pid, name=name))
    except LookupError as e:
        raise HTTPException(404, str(e)) from None
    except ValueError as e:
        raise _bad_request(e) from None
    link = f"{str(request.base_url).rstrip('/')}/join#{token}"
    return ctx.templates.TemplateResponse(request, "invite.html", {"pid": pid, "name": name.strip(),
                                                                   "link": link, "token": token})


@router.post("/admin/projects/{pid}/annotators/{aid}/disable", dependencies=[CSRF])
async def disable(ctx: CtxDep, _: AdminDep, pid: StoreId, aid: StoreId,
                  disabled: Annotated[bool, Form()] = True) -> Response:
    try:
        await ctx.writer.run(lambda s: crud.set_disabled(s, project_id=pid, annotator_id=aid, disabled=disabled))
    except LookupError as e:
        raise HTTPException(404, str(e)) from None
    ctx.forget_annotator(aid)  # committed: their next request asks the store and is refused
    return RedirectResponse(f"/admin/projects/{pid}", status_code=303)


# -- export ----------------------------------------------------------------------------------------------


def _export_zip(ctx, pid: int) -> bytes:
    labels = ctx.store.label_rows(pid, export=True)
    buf = io.BytesIO()
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in export_project(labels, tmp):
            zf.write(path, path.name)
    return buf.getvalue()


@router.get("/admin/projects/{pid}/export.zip")
async def export_zip(ctx: CtxDep, _: AdminDep, pid: StoreId) -> Response:
    """preferences (per annotator), preferences_majority, labels.jsonl and agreement.json, zipped."""
    await _project_or_404(ctx, pid)
    data = await run_in_threadpool(_export_zip, ctx, pid)
    return Response(data, media_type="application/zip",
                    headers={"content-disposition": f'attachment; filename="project-{pid}-export.zip"'})


@router.post("/admin/projects/{pid}/export-to-run", dependencies=[CSRF])
async def export_to_run(ctx: CtxDep, _: AdminDep, pid: StoreId) -> Response:
    """Write the export into the served run folder, where the pipeline's next steps read it."""
    if ctx.run_dir is None:
        raise HTTPException(400, "this server was not started with --run")
    await _project_or_404(ctx, pid)
    # through the run folder, which then counts the reward model and everything after it as stale
    await run_in_threadpool(lambda: RunFolder(ctx.run_dir).replace_preferences(
        lambda d: export_project(ctx.store.label_rows(pid, export=True), d, pairs=run_pairs(ctx.run_dir))))
    return RedirectResponse(f"/admin/projects/{pid}?exported=1", status_code=303)


# -- JSON API --------------------------------------------------------------------------------------------


@router.get("/api/admin/projects")
async def api_projects(ctx: CtxDep, _: AdminDep) -> dict:
    return {"projects": await _read(ctx, crud.project_list)}


@router.get("/api/admin/projects/{pid}")
async def api_project(ctx: CtxDep, _: AdminDep, pid: StoreId) -> dict:
    """Settings, progress, per-annotator rows and agreement (the dashboard's data)."""
    try:
        return await _read(ctx, lambda s: crud.overview(s, pid))
    except LookupError as e:
        raise HTTPException(404, str(e)) from None


@router.get("/api/admin/projects/{pid}/labels")
async def api_labels(ctx: CtxDep, _: AdminDep, pid: StoreId) -> dict:
    return {"labels": await run_in_threadpool(ctx.store.label_rows, pid)}


# -- the label browser -----------------------------------------------------------------------------------


@router.get("/admin/projects/{pid}/labels")
async def labels_page(request: Request, ctx: CtxDep, _: AdminDep, pid: StoreId,
                      annotator: Annotated[str, Query(max_length=200)] = "",
                      pair: Annotated[str, Query(max_length=200)] = "",
                      choice: Annotated[Literal["", "a", "b", "tie", "both_bad"], Query()] = "",
                      gold: Annotated[Literal["", "gold", "regular"], Query()] = "",
                      page: Annotated[int, Query(ge=1, le=1_000_000)] = 1) -> Response:
    """Every label of the project with rationales, gold results and agreement: filters in the query string
    (annotator, pair, choice, gold), a page at a time."""
    def view(s) -> dict:
        return crud.browse_labels(s, pid, annotator=annotator, pair=pair, choice=choice or None,
                                  gold=gold or None, page=page)
    try:
        data = await _read(ctx, view)
    except LookupError as e:
        raise HTTPException(404, str(e)) from None
    project = await run_in_threadpool(ctx.store.project, pid)
    return ctx.templates.TemplateResponse(request, "admin_labels.html", {**data, "project": project})
