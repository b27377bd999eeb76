"""The annotator's pages and JSON API: their own queue, their own labels, nobody else's.

The browser's label.js and the load tests use the same JSON routes. Writes go through the group-commit
writer, so an answer (200/201) means the label is committed.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Form, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from rlhf_lab.annotate import crud, queue
from rlhf_lab.annotate.deps import CSRF, AnnotatorDep, CtxDep, StoreId
from rlhf_lab.annotate.store import Project, WebSession

router = APIRouter()


class LabelIn(BaseModel):
    assignment_id: StoreId
    client_id: str = Field(min_length=8, max_length=100, description="client-generated; a retry reuses it")
    choice: Literal["left", "right", "tie", "both_bad"]
    strength: Literal["slightly", "much"] | None = None
    rationale: str | None = Field(None, max_length=5000)
    time_spent_ms: int | None = Field(None, ge=0, le=86_400_000)


class SkipIn(BaseModel):
    assignment_id: StoreId


def _next_and_progress(s, who: crud.Principal, ctx, *, after_write: bool = False, closed: bool = False) -> dict:
    """The next pair and progress. After a label or skip (`after_write`) the count of pairs left is not
    recomputed (the client counts down; it is the costliest query of a submission); `closed`: that write
    just closed the annotator's pending pair, so there is none to look for."""
    nxt = queue.next_assignment(s, annotator_id=who.annotator_id, project_id=who.project_id, hints=ctx.hints,
                                none_pending=closed)
    prog = queue.progress(s, annotator_id=who.annotator_id, project_id=who.project_id, hints=ctx.hints,
                          remaining=not after_write)
    return {"assignment": nxt, "progress": prog}


def _read(ctx, fn):
    def work():
        with ctx.store.session() as s:
            return fn(s)
    return run_in_threadpool(work)


# -- pages -----------------------------------------------------------------------------------------------


@router.get("/label")
async def label_page(request: Request, ctx: CtxDep, who: AnnotatorDep) -> Response:
    state = await ctx.writer.run(lambda s: _next_and_progress(s, who, ctx))
    project = await _read(ctx, lambda s: s.get(Project, who.project_id))
    return ctx.templates.TemplateResponse(request, "label.html", {"who": who, "project": project, **state})


@router.get("/guidelines")
async def guidelines_page(request: Request, ctx: CtxDep, who: AnnotatorDep) -> Response:
    project = await _read(ctx, lambda s: s.get(Project, who.project_id))
    return ctx.templates.TemplateResponse(request, "guidelines.html", {"who": who, "project": project})


@router.get("/profile")
async def profile_page(request: Request, ctx: CtxDep, who: AnnotatorDep) -> Response:
    profile = await _read(ctx, lambda s: crud.annotator_profile(s, who.annotator_id))
    return ctx.templates.TemplateResponse(request, "profile.html", {"who": who, "profile": profile})


@router.post("/profile", dependencies=[CSRF])
async def save_profile(ctx: CtxDep, who: AnnotatorDep, group: Annotated[str, Form(max_length=100)] = "",
                       consent: Annotated[bool, Form()] = False) -> Response:
    await ctx.writer.run(lambda s: crud.set_group(s, annotator_id=who.annotator_id, group=group, consent=consent))
    return RedirectResponse("/label", status_code=303)


# -- JSON API --------------------------------------------------------------------------------------------


@router.get("/api/next")
async def api_next(ctx: CtxDep, who: AnnotatorDep) -> dict:
    """Your current pair (reserved for you until you label or skip it) and your progress."""
    return await ctx.writer.run(lambda s: _next_and_progress(s, who, ctx))


@router.post("/api/labels", dependencies=[CSRF])
async def api_label(ctx: CtxDep, who: AnnotatorDep, body: LabelIn) -> Response:
    """Store a label (201; 200 when `client_id` was already stored) and return your next pair."""
    def op(s) -> dict:
        label, created = queue.submit_label(
            s, annotator_id=who.annotator_id, project_id=who.project_id, assignment_id=body.assignment_id,
            client_id=body.client_id, choice=body.choice, strength=body.strength, rationale=body.rationale,
            time_spent_ms=body.time_spent_ms)
        return {"label": label, "created": created,
                **_next_and_progress(s, who, ctx, after_write=True, closed=created)}

    out = await ctx.writer.run(op)
    return JSONResponse(out, status_code=201 if out["created"] else 200)


@router.post("/api/skip", dependencies=[CSRF])
async def api_skip(ctx: CtxDep, who: AnnotatorDep, body: SkipIn) -> dict:
    def op(s) -> dict:
        closed = queue.skip(s, annotator_id=who.annotator_id, project_id=who.project_id,
                            assignment_id=body.assignment_id, hints=ctx.hints)
        return _next_and_progress(s, who, ctx, after_write=True, closed=closed)

    return await ctx.writer.run(op)


@router.get("/api/progress")
async def api_progress(ctx: CtxDep, who: AnnotatorDep) -> dict:
    return await _read(ctx, lambda s: queue.progress(s, annotator_id=who.annotator_id,
                                                     project_id=who.project_id, hints=ctx.hints))


@router.get("/api/labels")
async def api_own_labels(ctx: CtxDep, who: AnnotatorDep) -> dict:
    """Your own labels, newest first."""
    return {"labels": await _read(ctx, lambda s: queue.own_labels(s, annotator_id=who.annotator_id))}


@router.get("/api/me")
async def api_me(ctx: CtxDep, who: AnnotatorDep) -> dict:
    profile = await _read(ctx, lambda s: crud.annotator_profile(s, who.annotator_id))
    return {"name": who.name, "project_id": who.project_id, **profile}


class ReviseIn(BaseModel):
    choice: Literal["left", "right", "tie", "both_bad"]
    strength: Literal["slightly", "much"] | None = None
    rationale: str | None = Field(None, max_length=5000)


def _since(s, who):
    return s.scalar(select(WebSession.created_at).where(WebSession.token_hash == who.session_hash))


@router.get("/api/labels/last")
async def api_last_label(ctx: CtxDep, who: AnnotatorDep) -> dict:
    """Your last label and its pair (as you saw it), while you may still change it (this sign-in)."""
    return await _read(ctx, lambda s: queue.last_label(s, annotator_id=who.annotator_id, since=_since(s, who)))


@router.post("/api/labels/{label_id}/revise", dependencies=[CSRF])
async def api_revise(ctx: CtxDep, who: AnnotatorDep, label_id: StoreId, body: ReviseIn) -> dict:
    """Change your last label (undo); the store keeps the version it replaces. Returns your current pair."""
    def op(s) -> dict:
        label, changed = queue.revise_label(s, annotator_id=who.annotator_id, label_id=label_id,
                                            since=_since(s, who), choice=body.choice, strength=body.strength,
                                            rationale=body.rationale)
        return {"label": label, "changed": changed, **_next_and_progress(s, who, ctx)}

    return await ctx.writer.run(op)
