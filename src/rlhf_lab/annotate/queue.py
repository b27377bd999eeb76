"""Each annotator's queue: which pair they get next, and storing their label or skip.

Assignment rules:
1. An annotator with a pending assignment gets it again (a reload shows the same pair, same order).
2. Gold checks are mixed in on a fixed schedule: position n of an annotator's queue is gold when
   ⌊(n+1)·r + φ⌋ > ⌊n·r + φ⌋ (r the gold rate, φ a per-annotator phase), so any run of N assignments
   holds ⌊N·r⌋ or ⌈N·r⌉ gold items. Each gold item is shown to an annotator at most once.
3. Otherwise the lowest-id pair that the annotator has never been assigned and that has fewer than
   `overlap` active assignments (done, or pending for less than LEASE). Filling pairs in id order
   completes whole pairs first, so agreement and the pipeline's resume have full pairs early.
4. Left/right order is drawn per assignment and recorded on the assignment and the label.

A skip frees the slot for someone else but stays in the annotator's history, so they never see the
pair again. Choosing and creating an assignment starts with a write to the project's row, which
serialises assignment per project across processes (PostgreSQL row lock, SQLite write lock).

Functions here take an open Session and do not commit: the caller's transaction (see writer.py) does.
Each raises `Rejected` only before it writes anything.
"""

from __future__ import annotations

import datetime as dt
import secrets
import threading
import time

from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.orm import Session

from rlhf_lab.annotate.store import STRENGTHS, Assignment, Item, Label, Project, utcnow

LEASE = dt.timedelta(hours=1)  # a pending assignment older than this no longer holds a slot
SCREEN_CHOICES = ("left", "right", "tie")
REMAINING_CAP = 100  # progress counts open pairs up to this many ("100+")
HINT_TTL_S = 30.0


class Rejected(Exception):
    """A request the queue refuses; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


class FrontierHints:
    """Per process: for each project, an item id below which every pair is known to be full, so the
    search for an open pair skips them. A skip lowers it; it is forgotten every HINT_TTL_S seconds so that
    slots freed by another process or by an expired lease are found again."""

    def __init__(self):
        self._hints: dict[int, tuple[int, float]] = {}
        self._lock = threading.Lock()

    def get(self, project_id: int) -> int:
        with self._lock:
            value, at = self._hints.get(project_id, (0, 0.0))
            return value if time.monotonic() - at < HINT_TTL_S else 0

    def set(self, project_id: int, item_id: int) -> None:
        with self._lock:
            _, at = self._hints.get(project_id, (0, 0.0))
            if time.monotonic() - at >= HINT_TTL_S:
                at = time.monotonic()
            self._hints[project_id] = (item_id, at)

    def reopen(self, project_id: int, item_id: int) -> None:
        with self._lock:
            if project_id in self._hints:
                value, at = self._hints[project_id]
                self._hints[project_id] = (min(value, item_id), at)

    def clear(self, project_id: int) -> None:
        with self._lock:
            self._hints.pop(project_id, None)


def _active_count(cutoff: dt.datetime):
    """Correlated subquery: assignments of Item that hold a slot."""
    return (select(func.count()).select_from(Assignment)
            .where(Assignment.item_id == Item.id,
                   or_(Assignment.status == "done",
                       and_(Assignment.status == "pending", Assignment.created_at > cutoff)))
            .scalar_subquery())


def _open_items(project: Project, cutoff: dt.datetime, start: int):
    return (select(Item.id)
            .where(Item.project_id == project.id, Item.is_gold.is_(False), Item.id >= start,
                   _active_count(cutoff) < project.overlap)
            .order_by(Item.id))


def _unseen_by(annotator_id: int):
    return ~exists().where(Assignment.item_id == Item.id, Assignment.annotator_id == annotator_id)


def gold_turn(position: int, rate: float, phase: float) -> bool:
    """Whether queue position `position` (0-based) is a gold check at gold rate `rate`."""
    return int((position + 1) * rate + phase) > int(position * rate + phase)


def _phase(annotator_id: int) -> float:
    return (annotator_id * 0.6180339887498949) % 1.0  # golden-ratio spread: annotators' gold items interleave


def assignment_view(item: Item, asg: Assignment, project: Project) -> dict:
    """What the annotator's screen shows, in screen order. Never says whether the item is gold."""
    left, right = (item.response_a, item.response_b) if asg.left_is_a else (item.response_b, item.response_a)
    hindsight = project.feedback_mode == "hindsight"
    return {"assignment_id": asg.id, "prompt": item.prompt, "left": left, "right": right,
            "outcome": item.outcome if hindsight else None, "feedback_mode": project.feedback_mode}


def next_assignment(s: Session, *, annotator_id: int, project_id: int, hints: FrontierHints) -> dict | None:
    """The annotator's current pair, reserving a new one if none is pending; None when nothing is left."""
    project = s.get(Project, project_id)
    if project is None:
        raise Rejected(404, "no such project")
    pending = s.scalar(select(Assignment).where(Assignment.annotator_id == annotator_id,
                                                Assignment.status == "pending").order_by(Assignment.id).limit(1))
    if pending is not None:
        return assignment_view(s.get(Item, pending.item_id), pending, project)
    # 1. lock: one assignment at a time per project, across processes
    s.execute(update(Project).where(Project.id == project.id).values(overlap=Project.overlap))
    item_id = None
    # 2. a gold check, on its turn
    if project.gold_rate > 0:
        position = s.scalar(select(func.count()).select_from(Assignment)
                            .where(Assignment.annotator_id == annotator_id))
        if gold_turn(position, project.gold_rate, _phase(annotator_id)):
            item_id = s.scalar(select(Item.id).where(Item.project_id == project.id, Item.is_gold.is_(True),
                                                     _unseen_by(annotator_id)).order_by(func.random()).limit(1))
    # 3. else the first open pair this annotator has not seen
    if item_id is None:
        cutoff = utcnow() - LEASE
        start = hints.get(project.id)
        first_open = s.scalar(_open_items(project, cutoff, start).limit(1))
        if first_open is None:
            hints.set(project.id, 2**62)
            return None
        hints.set(project.id, first_open)
        item_id = s.scalar(_open_items(project, cutoff, first_open).where(_unseen_by(annotator_id)).limit(1))
        if item_id is None:
            return None
    # 4. the screen order, drawn per assignment
    asg = Assignment(item_id=item_id, annotator_id=annotator_id, left_is_a=secrets.randbelow(2) == 0,
                     status="pending", created_at=utcnow())
    s.add(asg)
    s.flush()
    return assignment_view(s.get(Item, item_id), asg, project)


def _own_assignment(s: Session, annotator_id: int, assignment_id: int) -> Assignment:
    asg = s.get(Assignment, assignment_id)
    if asg is None or asg.annotator_id != annotator_id:
        raise Rejected(404, "no such assignment in your queue")
    return asg


def label_view(lab: Label) -> dict:
    screen = "tie" if lab.choice == "tie" else ("left" if (lab.choice == "a") == bool(lab.left_is_a) else "right")
    return {"label_id": lab.id, "client_id": lab.client_id, "assignment_id": lab.assignment_id,
            "choice": screen, "strength": lab.strength, "rationale": lab.rationale,
            "time_spent_ms": lab.time_spent_ms, "created_at": lab.created_at.isoformat()}


def submit_label(s: Session, *, annotator_id: int, project_id: int, assignment_id: int, client_id: str,
                 choice: str, strength: str | None, rationale: str | None,
                 time_spent_ms: int | None) -> tuple[dict, bool]:
    """Store the annotator's label for their assignment; returns (label, created). A repeated `client_id`
    returns the stored label with created=False (a retried submit is stored once)."""
    existing = s.scalar(select(Label).where(Label.client_id == client_id))
    if existing is not None:
        if existing.annotator_id != annotator_id:
            raise Rejected(409, "this client_id belongs to another submission")
        return label_view(existing), False
    if choice not in SCREEN_CHOICES:
        raise Rejected(422, f"choice must be one of {', '.join(SCREEN_CHOICES)}")
    if strength is not None and strength not in STRENGTHS:
        raise Rejected(422, f"strength must be one of {', '.join(STRENGTHS)} or empty")
    asg = _own_assignment(s, annotator_id, assignment_id)
    if asg.status != "pending":
        raise Rejected(409, f"this assignment is already {asg.status}")
    project = s.get(Project, project_id)
    stored = "tie" if choice == "tie" else ("a" if (choice == "left") == asg.left_is_a else "b")
    lab = Label(item_id=asg.item_id, annotator_id=annotator_id, assignment_id=asg.id, choice=stored,
                strength=None if stored == "tie" else strength, rationale=(rationale or None),
                feedback_mode=project.feedback_mode, left_is_a=asg.left_is_a, time_spent_ms=time_spent_ms,
                client_id=client_id, created_at=utcnow())
    s.add(lab)
    asg.status = "done"
    s.flush()
    return label_view(lab), True


def skip(s: Session, *, annotator_id: int, project_id: int, assignment_id: int, hints: FrontierHints) -> None:
    """Skip a pending assignment (idempotent); the pair goes to someone else, never back to this annotator."""
    asg = _own_assignment(s, annotator_id, assignment_id)
    if asg.status == "done":
        raise Rejected(409, "this assignment is already labelled")
    if asg.status == "pending":
        asg.status = "skipped"
        s.flush()
        hints.reopen(project_id, asg.item_id)


def progress(s: Session, *, annotator_id: int, project_id: int, hints: FrontierHints) -> dict:
    """{"done", "skipped", "remaining"}: remaining counts open pairs this annotator could still get, capped
    at REMAINING_CAP (then "remaining_capped" is true)."""
    rows = dict(s.execute(select(Assignment.status, func.count()).where(Assignment.annotator_id == annotator_id)
                          .group_by(Assignment.status)).all())
    project = s.get(Project, project_id)
    open_q = (_open_items(project, utcnow() - LEASE, hints.get(project_id)).where(_unseen_by(annotator_id))
              .limit(REMAINING_CAP + 1).subquery())
    remaining = s.scalar(select(func.count()).select_from(open_q))
    return {"done": rows.get("done", 0), "skipped": rows.get("skipped", 0),
            "remaining": min(remaining, REMAINING_CAP) + rows.get("pending", 0),
            "remaining_capped": remaining > REMAINING_CAP}


def own_labels(s: Session, *, annotator_id: int) -> list[dict]:
    """The annotator's own labels, newest first; nobody else's."""
    labs = s.scalars(select(Label).where(Label.annotator_id == annotator_id).order_by(Label.id.desc()))
    return [label_view(lab) for lab in labs]
