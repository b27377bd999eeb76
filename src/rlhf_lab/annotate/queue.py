"""Each annotator's queue: which pair they get next, and storing their label or skip.

Assignment rules:
1. An annotator with a pending assignment gets it again (a reload shows the same pair, same order).
2. Gold checks are mixed in on a fixed schedule: position n of an annotator's queue is gold when
   ⌊(n+1)·r + φ⌋ > ⌊n·r + φ⌋ (r the gold rate, φ a per-annotator phase), so any run of N assignments
   holds ⌊N·r⌋ or ⌈N·r⌉ gold items. Each gold item is shown to an annotator at most once.
3. Otherwise one of the WINDOW lowest-id pairs that the annotator has never been assigned and that have
   fewer than `overlap` active assignments (done, or pending for less than LEASE): the first in the
   annotator's own order (blocks of WINDOW ids in id order, shuffled inside by a hash of annotator and
   pair: random-looking, yet reproducible) whose prompt differs from their previous pair's. Pairs of one
   prompt sit next to each other in a sampled file, so id order alone showed one prompt many times in a
   row; staying near the frontier still completes whole pairs early, for agreement and `run --resume`.
4. Left/right order comes from the same per-annotator hash, and is recorded on the assignment and label.

A skip frees the slot for someone else but stays in the annotator's history, so they never see the
pair again. Choosing and creating an assignment starts with a write to the project's row, which
serialises assignment per project across processes (PostgreSQL row lock, SQLite write lock).

Functions here take an open Session and do not commit: the caller's transaction (see writer.py) does.
Each raises `Rejected` only before it writes anything.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
import time

from sqlalchemy import and_, bindparam, case, exists, func, insert, or_, select, update
from sqlalchemy.orm import Session

from rlhf_lab.annotate.store import STRENGTHS, Assignment, Item, Label, LabelRevision, Project, utcnow
from rlhf_lab.data import shown

LEASE = dt.timedelta(hours=1)  # a pending assignment older than this no longer holds a slot
SCREEN_CHOICES = ("left", "right", "tie", "both_bad")  # both_bad: stored as a tie flagged both_bad
WINDOW = 16  # the next pair is drawn from this many open pairs at the frontier
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


# The hot path (every submission) runs these prebuilt Core statements on the session's connection:
# SQLAlchemy compiles each once and caches it, and rows come back without ORM bookkeeping.
A, I, L, P = Assignment.__table__, Item.__table__, Label.__table__, Project.__table__
_PROJECT = select(P.c.overlap, P.c.gold_rate, P.c.feedback_mode).where(P.c.id == bindparam("pid"))
# A no-op write to the project's row: locks it (PostgreSQL row lock, SQLite write lock) and reads the settings.
_LOCK = (update(P).where(P.c.id == bindparam("pid")).values(overlap=P.c.overlap)
         .returning(P.c.overlap, P.c.gold_rate, P.c.feedback_mode))
_PENDING = (select(A.c.id, A.c.item_id, A.c.left_is_a)
            .where(A.c.annotator_id == bindparam("aid"), A.c.status == "pending").order_by(A.c.id).limit(1))
_POSITION = select(func.count()).select_from(A).where(A.c.annotator_id == bindparam("aid"))
_UNSEEN = ~exists().where(A.c.item_id == I.c.id, A.c.annotator_id == bindparam("aid"))
_GOLD = (select(I.c.id).where(I.c.project_id == bindparam("pid"), I.c.is_gold.is_(True), _UNSEEN)
         .order_by(I.c.id).limit(WINDOW))
_I2 = I.alias("previous")
_PREVIOUS_PROMPT = (select(_I2.c.prompt).join(A, A.c.item_id == _I2.c.id).where(A.c.annotator_id == bindparam("aid"))
                    .order_by(A.c.id.desc()).limit(1).scalar_subquery())
# the pair's content (what the screen shows) and whether its prompt is the previous pair's, in one round trip
_SAME_PROMPT = (select(I.c.prompt, I.c.response_a, I.c.response_b, I.c.outcome,
                       (I.c.prompt == _PREVIOUS_PROMPT).label("same"))
                .where(I.c.id == bindparam("iid")))
# pairs of an id range whose prompt is not the one of the annotator's previous pair (all, if none)
_OTHER_PROMPT = select(I.c.id).where(I.c.project_id == bindparam("pid"), I.c.id >= bindparam("lo"),
                                     I.c.id <= bindparam("hi"),
                                     func.coalesce(I.c.prompt != _PREVIOUS_PROMPT, True))
# Open pairs are found a chunk at a time: the chunk's pairs in id order (an index range scan, LIMIT inside a
# subquery), each with its slots counted by a join to its assignments, in one round trip. A single query with
# a correlated count per pair and no chunk leaves the planner free to count every pair first.
_CANDIDATES = (select(I.c.id).where(I.c.project_id == bindparam("pid"), I.c.is_gold.is_(False),
                                    I.c.id >= bindparam("start")).order_by(I.c.id).limit(bindparam("n"))
               .subquery("candidates"))
_HOLDS_SLOT = or_(A.c.status == "done", and_(A.c.status == "pending", A.c.created_at > bindparam("cutoff")))
_MINE = A.c.annotator_id == bindparam("aid")
# (pair id, slots held, held by this annotator); a pair without assignments joins to NULLs and counts 0
_SLOTS = (select(_CANDIDATES.c.id, func.sum(case((_HOLDS_SLOT, 1), else_=0)), func.sum(case((_MINE, 1), else_=0)))
          .select_from(_CANDIDATES.outerjoin(A, A.c.item_id == _CANDIDATES.c.id))
          .group_by(_CANDIDATES.c.id).order_by(_CANDIDATES.c.id))
SCAN_CHUNK = 64
_ITEM = select(I.c.prompt, I.c.response_a, I.c.response_b, I.c.outcome).where(I.c.id == bindparam("iid"))
_NEW_ASSIGNMENT = insert(A).returning(A.c.id)
_ASSIGNMENT = select(A.c.item_id, A.c.annotator_id, A.c.status, A.c.left_is_a).where(A.c.id == bindparam("asg"))
# a submission's assignment and whether its client_id is stored already, in one round trip (PostgreSQL runs
# every statement as a round trip from the one writer thread, so their number bounds labels per second)
_ASSIGNMENT_AND_CLIENT_ID = (
    select(A.c.item_id, A.c.annotator_id, A.c.status, A.c.left_is_a,
           select(L.c.id).where(L.c.client_id == bindparam("cid")).scalar_subquery().label("label_id"))
    .where(A.c.id == bindparam("asg")))
_SET_STATUS = (update(A).where(A.c.id == bindparam("asg"), A.c.status == "pending")
               .values(status=bindparam("new_status")))
_LABEL_BY_CLIENT_ID = select(L).where(L.c.client_id == bindparam("cid"))
_NEW_LABEL = insert(L).returning(L.c.id)
_STATUS_COUNTS = (select(A.c.status, func.count()).where(A.c.annotator_id == bindparam("aid"))
                  .group_by(A.c.status))
# Open pairs this annotator has never been assigned = regular pairs − full ones − open ones they hold. Counted
# from the assignments (few, early on; and the frontier skips the full prefix), not pair by pair.
_REGULAR = select(func.count()).select_from(I).where(I.c.project_id == bindparam("pid"), I.c.is_gold.is_(False),
                                                     I.c.id >= bindparam("start"))
_PER_ITEM = (select(func.sum(case((_HOLDS_SLOT, 1), else_=0)).label("active"),
                    func.sum(case((_MINE, 1), else_=0)).label("mine"))
             .join(I, I.c.id == A.c.item_id)
             .where(I.c.project_id == bindparam("pid"), I.c.is_gold.is_(False), A.c.item_id >= bindparam("start"))
             .group_by(A.c.item_id).subquery())
_CLOSED = select(func.sum(case((_PER_ITEM.c.active >= bindparam("overlap"), 1), else_=0)),
                 func.sum(case((and_(_PER_ITEM.c.active < bindparam("overlap"), _PER_ITEM.c.mine > 0), 1), else_=0)))
_GOLD_UNSEEN = (select(func.count()).select_from(I)
                .where(I.c.project_id == bindparam("pid"), I.c.is_gold.is_(True), _UNSEEN))


def gold_turn(position: int, rate: float, phase: float) -> bool:
    """Whether queue position `position` (0-based) is a gold check at gold rate `rate`."""
    return int((position + 1) * rate + phase) > int(position * rate + phase)


def _phase(annotator_id: int) -> float:
    return (annotator_id * 0.6180339887498949) % 1.0  # golden-ratio spread: annotators' gold items interleave


def order_key(annotator_id: int, item_id: int) -> int:
    """The annotator's own order of pairs: a hash, so every annotator has a different, reproducible order."""
    return int.from_bytes(hashlib.blake2b(f"{annotator_id}/{item_id}".encode(), digest_size=8).digest(), "big")


def _pick(conn, *, annotator_id: int, project_id: int, ids: list[int]) -> tuple[int, object | None]:
    """The first of `ids` in the annotator's order whose prompt differs from their previous pair's (the
    first in that order when all share it), and that pair's content when it was read on the way (else None).
    The order shuffles pairs within blocks of WINDOW ids and keeps the blocks in id order: no pair waits long
    behind newer ones, so pairs still complete near the frontier."""
    ranked = sorted(ids, key=lambda i: (i // WINDOW, order_key(annotator_id, i)))
    if len(ranked) == 1:
        return ranked[0], None
    first = conn.execute(_SAME_PROMPT, {"aid": annotator_id, "iid": ranked[0]}).one()
    if not first.same:  # the usual case: one point lookup, which also read the pair for the screen
        return ranked[0], first
    other = set(conn.execute(_OTHER_PROMPT, {"pid": project_id, "aid": annotator_id, "lo": min(ids),
                                             "hi": max(ids)}).scalars())
    return next((i for i in ranked if i in other), ranked[0]), None


def _scan_open(conn, *, project_id: int, overlap: int, start: int, annotator_id: int,
               want: int) -> tuple[int | None, list[int]]:
    """(the first pair with a free slot, up to `want` such pairs this annotator has never been assigned),
    scanning pairs in id order from `start`."""
    cutoff = utcnow() - LEASE
    first_open, unseen = None, []
    while len(unseen) < want:
        rows = conn.execute(_SLOTS, {"pid": project_id, "start": start, "n": SCAN_CHUNK, "cutoff": cutoff,
                                     "aid": annotator_id}).all()
        if not rows:
            break
        for item_id, active, mine in rows:
            if active >= overlap:
                continue
            first_open = item_id if first_open is None else first_open
            if not mine:
                unseen.append(item_id)
                if len(unseen) == want:
                    break
        start = rows[-1][0] + 1
    return first_open, unseen


def _project(s: Session, project_id: int, *, lock: bool = False):
    """The project's queue settings, read once per transaction (a group-commit batch shares them).
    `lock`: also lock the project's row until the transaction ends (assignment needs it)."""
    cache = s.info.setdefault("queue_projects", {})
    cached = cache.get(project_id)
    if cached is None or (lock and not cached[1]):
        row = s.connection().execute(_LOCK if lock else _PROJECT, {"pid": project_id}).first()
        if row is None:
            raise Rejected(404, "no such project")
        cache[project_id] = cached = (row, lock)
    return cached[0]


def forget_settings(s: Session) -> None:
    """Call after changing a project's settings inside a transaction that may also run queue functions."""
    s.info.pop("queue_projects", None)


def _screen(item, *, left_is_a: bool, feedback_mode: str) -> dict:
    """A pair as the annotator sees it: in screen order, the outcome only in hindsight mode, and an empty
    response shown as an answer to judge, never a blank side. Never says whether the item is gold."""
    left, right = (item.response_a, item.response_b) if left_is_a else (item.response_b, item.response_a)
    return {"prompt": item.prompt, "left": shown(left), "right": shown(right),
            "outcome": item.outcome if feedback_mode == "hindsight" else None}


def _view(conn, *, assignment_id: int, item_id: int, left_is_a: bool, feedback_mode: str, item=None) -> dict:
    """What the annotator's screen shows for an assignment (`item`: the pair's row, when already read)."""
    item = item if item is not None else conn.execute(_ITEM, {"iid": item_id}).one()
    return {"assignment_id": assignment_id, **_screen(item, left_is_a=left_is_a, feedback_mode=feedback_mode),
            "feedback_mode": feedback_mode}


def next_assignment(s: Session, *, annotator_id: int, project_id: int, hints: FrontierHints,
                    none_pending: bool = False) -> dict | None:
    """The annotator's current pair, reserving a new one if none is pending; None when nothing is left.
    `none_pending`: the caller has just closed the annotator's pending pair (saves a query)."""
    conn = s.connection()
    if not none_pending:
        pending = conn.execute(_PENDING, {"aid": annotator_id}).first()
        if pending is not None:
            return _view(conn, assignment_id=pending.id, item_id=pending.item_id, left_is_a=pending.left_is_a,
                         feedback_mode=_project(s, project_id).feedback_mode)
    # 1. lock: one assignment at a time per project, across processes
    project = _project(s, project_id, lock=True)
    item_id, item = None, None
    # 2. a gold check, on its turn
    if project.gold_rate > 0:
        position = conn.execute(_POSITION, {"aid": annotator_id}).scalar_one()
        if gold_turn(position, project.gold_rate, _phase(annotator_id)):
            golds = conn.execute(_GOLD, {"pid": project_id, "aid": annotator_id}).scalars().all()
            item_id = min(golds, key=lambda i: order_key(annotator_id, i)) if golds else None
    # 3. else the first open pair this annotator has not seen
    if item_id is None:
        first_open, unseen = _scan_open(conn, project_id=project_id, overlap=project.overlap,
                                        start=hints.get(project_id), annotator_id=annotator_id, want=WINDOW)
        hints.set(project_id, 2**31 - 1 if first_open is None else first_open)  # 2**31 - 1: all full
        if not unseen:
            return None
        item_id, item = _pick(conn, annotator_id=annotator_id, project_id=project_id, ids=unseen)
    # 4. the screen order, from another bit of the annotator's hash
    left_is_a = order_key(annotator_id, -item_id) % 2 == 0
    asg_id = conn.execute(_NEW_ASSIGNMENT, {"item_id": item_id, "annotator_id": annotator_id, "left_is_a": left_is_a,
                                            "status": "pending", "created_at": utcnow()}).scalar_one()
    return _view(conn, assignment_id=asg_id, item_id=item_id, left_is_a=left_is_a,
                 feedback_mode=project.feedback_mode, item=item)


def _own(asg, annotator_id: int):
    """`asg` (a row of the assignment asked for, or None), if it is this annotator's."""
    if asg is None or asg.annotator_id != annotator_id:
        raise Rejected(404, "no such assignment in your queue")
    return asg


def _own_assignment(conn, annotator_id: int, assignment_id: int):
    return _own(conn.execute(_ASSIGNMENT, {"asg": assignment_id}).first(), annotator_id)


def label_view(lab) -> dict:
    """A label (ORM object or row) in the annotator's screen terms."""
    if lab.choice == "tie":
        screen = "both_bad" if lab.both_bad else "tie"
    else:
        screen = "left" if (lab.choice == "a") == bool(lab.left_is_a) else "right"
    return {"label_id": lab.id, "client_id": lab.client_id, "assignment_id": lab.assignment_id,
            "choice": screen, "strength": lab.strength, "rationale": lab.rationale,
            "time_spent_ms": lab.time_spent_ms, "created_at": lab.created_at.isoformat()}


def submit_label(s: Session, *, annotator_id: int, project_id: int, assignment_id: int, client_id: str,
                 choice: str, strength: str | None, rationale: str | None,
                 time_spent_ms: int | None) -> tuple[dict, bool]:
    """Store the annotator's label for their assignment; returns (label, created). A repeated `client_id`
    returns the stored label with created=False (a retried submit is stored once)."""
    conn = s.connection()
    asg = conn.execute(_ASSIGNMENT_AND_CLIENT_ID, {"asg": assignment_id, "cid": client_id}).first()
    if asg is None or asg.label_id is not None:  # a retry, or no such assignment: the client_id decides first
        existing = conn.execute(_LABEL_BY_CLIENT_ID, {"cid": client_id}).first()
        if existing is not None:
            if existing.annotator_id != annotator_id:
                raise Rejected(409, "this client_id belongs to another submission")
            return label_view(existing), False
    _check_answer(choice, strength)
    asg = _own(asg, annotator_id)
    if asg.status != "pending":
        raise Rejected(409, f"this assignment is already {asg.status}")
    project = _project(s, project_id, lock=True)  # a write transaction: lock now, assignment reuses it
    stored = _stored_choice(choice, left_is_a=bool(asg.left_is_a))
    values = {"item_id": asg.item_id, "annotator_id": annotator_id, "assignment_id": assignment_id,
              "choice": stored, "both_bad": choice == "both_bad",
              "strength": None if stored == "tie" else strength, "rationale": rationale or None,
              "feedback_mode": project.feedback_mode, "left_is_a": bool(asg.left_is_a),
              "time_spent_ms": time_spent_ms, "client_id": client_id, "created_at": utcnow()}
    label_id = conn.execute(_NEW_LABEL, values).scalar_one()
    conn.execute(_SET_STATUS, {"asg": assignment_id, "new_status": "done"})
    return {"label_id": label_id, "client_id": client_id, "assignment_id": assignment_id, "choice": choice,
            "strength": values["strength"], "rationale": values["rationale"], "time_spent_ms": time_spent_ms,
            "created_at": values["created_at"].isoformat()}, True


def _stored_choice(screen: str, *, left_is_a: bool) -> str:
    if screen in ("tie", "both_bad"):
        return "tie"
    return "a" if (screen == "left") == left_is_a else "b"


def skip(s: Session, *, annotator_id: int, project_id: int, assignment_id: int, hints: FrontierHints) -> bool:
    """Skip a pending assignment; the pair goes to someone else, never back to this annotator. Idempotent:
    returns False when it was skipped already."""
    conn = s.connection()
    asg = _own_assignment(conn, annotator_id, assignment_id)
    if asg.status == "done":
        raise Rejected(409, "this assignment is already labelled")
    if asg.status != "pending":
        return False
    conn.execute(_SET_STATUS, {"asg": assignment_id, "new_status": "skipped"})
    hints.reopen(project_id, asg.item_id)
    return True


def _check_answer(choice: str, strength: str | None) -> None:
    if choice not in SCREEN_CHOICES:
        raise Rejected(422, f"choice must be one of {', '.join(SCREEN_CHOICES)}")
    if strength is not None and strength not in STRENGTHS:
        raise Rejected(422, f"strength must be one of {', '.join(STRENGTHS)} or empty")


def future_queue(*, regular: int, gold: int, position: int, rate: float, phase: float) -> int:
    """How many more assignments the queue will hand out from `position` on, with `regular` open pairs
    and `gold` unseen gold checks: gold on its turns while any is left, and the queue ends with the
    regular pairs (as `next_assignment` does)."""
    if gold == 0 or rate <= 0:
        return regular
    total = 0
    while regular > 0 and gold > 0:  # once the gold checks are used up, the rest are regular pairs
        if gold_turn(position, rate, phase):
            gold -= 1
        else:
            regular -= 1
        position += 1
        total += 1
    return total + regular


def progress(s: Session, *, annotator_id: int, project_id: int, hints: FrontierHints,
             remaining: bool = True) -> dict:
    """{"done", "skipped"} and, with `remaining`, exactly how many pairs this annotator will still get as
    things stand (their pending one and their gold checks included; others labelling change it)."""
    conn = s.connection()
    counts = dict(conn.execute(_STATUS_COUNTS, {"aid": annotator_id}).all())
    out = {"done": counts.get("done", 0), "skipped": counts.get("skipped", 0)}
    if remaining:
        project = _project(s, project_id)
        args = {"pid": project_id, "aid": annotator_id, "start": hints.get(project_id), "overlap": project.overlap,
                "cutoff": utcnow() - LEASE}
        full, held = conn.execute(_CLOSED, args).one()
        regular = conn.execute(_REGULAR, args).scalar_one() - (full or 0) - (held or 0)
        gold = conn.execute(_GOLD_UNSEEN, args).scalar_one() if project.gold_rate > 0 else 0
        future = future_queue(regular=regular, gold=gold, position=sum(counts.values()), rate=project.gold_rate,
                              phase=_phase(annotator_id))
        out["remaining"] = counts.get("pending", 0) + future
    return out


def own_labels(s: Session, *, annotator_id: int) -> list[dict]:
    """The annotator's own labels, newest first; nobody else's."""
    rows = s.connection().execute(select(L).where(L.c.annotator_id == annotator_id).order_by(L.c.id.desc()))
    return [label_view(row) for row in rows]


# -- undo: changing one's last label ---------------------------------------------------------------------


def _last_label(s: Session, annotator_id: int, *, since: dt.datetime) -> Label:
    """The annotator's newest label, if they may still change it: stored since `since` (the start of their
    signed-in session, so a label is changed in the sitting it was given in, not days later) and after the
    project's last export (an exported label stays as it was exported)."""
    lab = s.scalar(select(Label).where(Label.annotator_id == annotator_id).order_by(Label.id.desc()).limit(1))
    if lab is None:
        raise Rejected(404, "you have no label to change")
    if lab.created_at < since:
        raise Rejected(409, "your last label was stored before this sign-in; it can no longer be changed")
    exported = s.scalar(select(Project.exported_at).join(Item, Item.project_id == Project.id)
                        .where(Item.id == lab.item_id))
    if exported is not None and lab.created_at <= exported:
        raise Rejected(409, "your last label has been exported already; it can no longer be changed")
    return lab


def last_label(s: Session, *, annotator_id: int, since: dt.datetime) -> dict:
    """The annotator's last label and its pair, in the screen order they labelled it in."""
    lab = _last_label(s, annotator_id, since=since)
    item = s.get(Item, lab.item_id)
    return {"label": label_view(lab),
            "pair": _screen(item, left_is_a=bool(lab.left_is_a), feedback_mode=lab.feedback_mode)}


def revise_label(s: Session, *, annotator_id: int, label_id: int, since: dt.datetime, choice: str,
                 strength: str | None, rationale: str | None) -> tuple[dict, bool]:
    """Change the annotator's last label (see `_last_label`); returns (label, changed). The version it
    replaces is kept as a LabelRevision, so the store keeps every answer ever acknowledged. Sending the
    stored answer again changes nothing (a retried request is applied once)."""
    _check_answer(choice, strength)
    lab = _last_label(s, annotator_id, since=since)
    if lab.id != label_id:
        raise Rejected(409, "only your last label can be changed")
    stored = _stored_choice(choice, left_is_a=bool(lab.left_is_a))
    new = {"choice": stored, "both_bad": choice == "both_bad", "strength": None if stored == "tie" else strength,
           "rationale": rationale or None}
    if all(getattr(lab, k) == v for k, v in new.items()):
        return label_view(lab), False
    previous = s.scalar(select(func.max(LabelRevision.replaced_at)).where(LabelRevision.label_id == lab.id))
    s.add(LabelRevision(label_id=lab.id, choice=lab.choice, both_bad=lab.both_bad, strength=lab.strength,
                        rationale=lab.rationale, time_spent_ms=lab.time_spent_ms,
                        stored_at=previous or lab.created_at, replaced_at=utcnow()))
    for k, v in new.items():
        setattr(lab, k, v)
    s.flush()
    return label_view(lab), True
