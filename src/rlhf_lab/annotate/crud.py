"""The web app's queries besides the annotator queue (queue.py): sign-in, invites, project settings and the
admin's overview. Routes call these; they never build queries themselves."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass

from sqlalchemy import bindparam, delete, func, select
from sqlalchemy.orm import Session

from rlhf_lab.annotate import agreement, queue
from rlhf_lab.annotate.security import hash_token, new_token
from rlhf_lab.annotate.store import (
    FEEDBACK_MODES,
    AdminToken,
    AnnotationStore,
    Annotator,
    Assignment,
    Invite,
    Item,
    Label,
    LabelRevision,
    Project,
    WebSession,
    utcnow,
)

SESSION_TTL = dt.timedelta(days=14)
INVITE_TTL = dt.timedelta(days=7)
ADMIN_TOKEN_TTL = dt.timedelta(days=1)


@dataclass(frozen=True)
class Principal:
    """Who is signed in: role "admin", or role "annotator" with their annotator and project."""

    role: str
    session_hash: str
    annotator_id: int | None = None
    project_id: int | None = None
    name: str | None = None
    expires_at: dt.datetime | None = None


# -- sign-in ---------------------------------------------------------------------------------------------


def issue_admin_token(store: AnnotationStore) -> str:
    """A fresh one-time admin token (shown once; only its digest is stored). Earlier unused ones stop
    working: `serve` issues one at each start, and a token printed by an earlier start may sit in an old
    terminal or log."""
    token = new_token()
    with store.session() as s:
        s.execute(delete(AdminToken).where(AdminToken.used_at.is_(None)))
        s.add(AdminToken(token_hash=hash_token(token), expires_at=utcnow() + ADMIN_TOKEN_TTL))
    return token


def _new_session(s: Session, *, role: str, annotator_id: int | None = None) -> str:
    token = new_token()
    s.add(WebSession(token_hash=hash_token(token), role=role, annotator_id=annotator_id,
                     expires_at=utcnow() + SESSION_TTL))
    return token


def redeem_admin_token(s: Session, token: str) -> str | None:
    """A new admin session token, or None for an unknown, used or expired token."""
    row = s.scalar(select(AdminToken).where(AdminToken.token_hash == hash_token(token)))
    now = utcnow()
    if row is None or row.used_at is not None or row.expires_at < now:
        return None
    row.used_at = now
    return _new_session(s, role="admin")


def create_invite(s: Session, *, project_id: int, name: str) -> str:
    """A one-time invite link token for annotator `name` of the project (created if new). Inviting an
    existing annotator again issues a new link for the same person (same queue, same labels)."""
    name = name.strip()
    if not name or len(name) > 200:
        raise ValueError("an annotator needs a name of 1 to 200 characters")
    if s.get(Project, project_id) is None:
        raise LookupError("no such project")
    ann = s.scalar(select(Annotator).where(Annotator.project_id == project_id, Annotator.name == name))
    if ann is None:
        ann = Annotator(project_id=project_id, name=name, kind="human")
        s.add(ann)
        s.flush()
    elif ann.kind != "human":
        raise ValueError(f"{name!r} is a simulated annotator")
    token = new_token()
    s.add(Invite(annotator_id=ann.id, token_hash=hash_token(token), expires_at=utcnow() + INVITE_TTL))
    return token


def redeem_invite(s: Session, token: str) -> str | None:
    """A new annotator session token, or None for an unknown, used or expired invite."""
    inv = s.scalar(select(Invite).where(Invite.token_hash == hash_token(token)))
    now = utcnow()
    if inv is None or inv.used_at is not None or inv.expires_at < now:
        return None
    ann = s.get(Annotator, inv.annotator_id)
    if ann is None or ann.disabled:
        return None
    inv.used_at = now
    return _new_session(s, role="annotator", annotator_id=ann.id)


# Built once, columns rather than ORM objects: `principal` runs on every request when the session cache
# is off (several workers), and building the statement and loading two entities each time cost several
# times the query itself.
_PRINCIPAL = (select(WebSession.role, WebSession.expires_at, Annotator.id, Annotator.project_id, Annotator.name,
                     Annotator.disabled)
              .outerjoin(Annotator, Annotator.id == WebSession.annotator_id)
              .where(WebSession.token_hash == bindparam("session_hash")))


def principal(s: Session, session_hash: str) -> Principal | None:
    row = s.execute(_PRINCIPAL, {"session_hash": session_hash}).first()
    if row is None:
        return None
    role, expires_at, annotator_id, project_id, name, disabled = row
    if expires_at < utcnow():
        return None
    if role == "admin":
        return Principal(role="admin", session_hash=session_hash, expires_at=expires_at)
    if annotator_id is None or disabled:
        return None
    return Principal(role="annotator", session_hash=session_hash, annotator_id=annotator_id,
                     project_id=project_id, name=name, expires_at=expires_at)


def end_session(s: Session, session_hash: str) -> None:
    s.execute(delete(WebSession).where(WebSession.token_hash == session_hash))


# -- annotators ------------------------------------------------------------------------------------------


def annotator_profile(s: Session, annotator_id: int) -> dict:
    ann = s.get(Annotator, annotator_id)
    return {"name": ann.name, "group": ann.group, "group_consent": ann.group_consent}


def set_group(s: Session, *, annotator_id: int, group: str | None, consent: bool) -> None:
    """Store a self-description only with consent; withdrawing consent deletes it."""
    ann = s.get(Annotator, annotator_id)
    group = (group or "").strip()[:100] or None
    ann.group, ann.group_consent = (group, True) if consent and group else (None, False)


def set_disabled(s: Session, *, project_id: int, annotator_id: int, disabled: bool) -> None:
    ann = s.get(Annotator, annotator_id)
    if ann is None or ann.project_id != project_id:
        raise LookupError("no such annotator in this project")
    ann.disabled = disabled
    if disabled:
        s.execute(delete(WebSession).where(WebSession.annotator_id == annotator_id))


# -- projects --------------------------------------------------------------------------------------------


def update_project(s: Session, project_id: int, *, guidelines: str, overlap: int, gold_rate: float,
                   feedback_mode: str) -> None:
    if feedback_mode not in FEEDBACK_MODES:
        raise ValueError(f"feedback mode must be one of {', '.join(FEEDBACK_MODES)}")
    if not 1 <= overlap <= 32:
        raise ValueError("overlap (labels per pair) must be between 1 and 32")
    if not 0.0 <= gold_rate < 1.0:
        raise ValueError("gold-check rate must be in [0, 1)")
    if len(guidelines) > 100_000:
        raise ValueError("guidelines are longer than 100,000 characters")
    p = s.get(Project, project_id)
    if p is None:
        raise LookupError("no such project")
    p.guidelines, p.overlap, p.gold_rate, p.feedback_mode = guidelines, overlap, gold_rate, feedback_mode
    queue.forget_settings(s)


def set_outcomes(s: Session, project_id: int, outcomes: dict[str, str]) -> int:
    """Attach outcome texts by pair id, all or nothing: an unknown pair id rejects the whole file."""
    items = {it.uid: it for it in s.scalars(select(Item).where(Item.project_id == project_id,
                                                               Item.uid.in_(list(outcomes))))}
    unknown = [uid for uid in outcomes if uid not in items]
    if unknown:
        raise ValueError(f"unknown pair id(s): {', '.join(unknown[:5])}{' …' if len(unknown) > 5 else ''}")
    for uid, text in outcomes.items():
        items[uid].outcome = text
    return len(outcomes)


def project_list(s: Session) -> list[dict]:
    items = dict(s.execute(select(Item.project_id, func.count()).group_by(Item.project_id)).all())
    labels = dict(s.execute(select(Item.project_id, func.count()).join(Label, Label.item_id == Item.id)
                            .group_by(Item.project_id)).all())
    return [{"id": p.id, "name": p.name, "pairs": items.get(p.id, 0), "labels": labels.get(p.id, 0),
             "overlap": p.overlap, "feedback_mode": p.feedback_mode}
            for p in s.scalars(select(Project).order_by(Project.id))]


def free_project_name(taken: set[str], base: str) -> str:
    """`base`, or the first of `base`-2, `base`-3, … that no project has (the new-project form's default)."""
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}-{n}"
    return name


def label_triples(s: Session, project_id: int) -> tuple[list[tuple[int, str, str]], dict[int, str]]:
    """(labels as (item id, annotator name, choice), {gold item id: known choice}) for agreement."""
    rows = s.execute(select(Label.item_id, Annotator.name, Label.choice)
                     .join(Annotator, Annotator.id == Label.annotator_id)
                     .join(Item, Item.id == Label.item_id).where(Item.project_id == project_id)).all()
    gold = dict(s.execute(select(Item.id, Item.gold_choice).where(Item.project_id == project_id,
                                                                  Item.is_gold.is_(True))).all())
    return [tuple(r) for r in rows], gold


def overview(s: Session, project_id: int) -> dict:
    """The admin dashboard: settings, progress, per-annotator rows and agreement."""
    p = s.get(Project, project_id)
    if p is None:
        raise LookupError("no such project")
    triples, gold = label_triples(s, project_id)
    summary = agreement.summary(triples, gold)
    per_item = Counter(item for item, _, _ in triples if item not in gold)
    n_items = s.scalar(select(func.count()).select_from(Item).where(Item.project_id == project_id,
                                                                   Item.is_gold.is_(False)))
    status = Counter()
    for ann_id, st, n in s.execute(select(Assignment.annotator_id, Assignment.status, func.count())
                                   .join(Annotator, Annotator.id == Assignment.annotator_id)
                                   .where(Annotator.project_id == project_id)
                                   .group_by(Assignment.annotator_id, Assignment.status)):
        status[(ann_id, st)] = n
    annotators = []
    for ann in s.scalars(select(Annotator).where(Annotator.project_id == project_id).order_by(Annotator.id)):
        maj = summary["majority_agreement"].get(ann.name, {})
        gacc = summary["gold_accuracy"].get(ann.name, {})
        annotators.append({
            "id": ann.id, "name": ann.name, "kind": ann.kind, "disabled": ann.disabled,
            "group": ann.group if ann.group_consent or ann.kind == "simulated" else None,
            "done": status[(ann.id, "done")], "skipped": status[(ann.id, "skipped")],
            "pending": status[(ann.id, "pending")],
            "majority_rate": maj.get("rate"), "majority_n": maj.get("n", 0),
            "gold_rate": gacc.get("rate"), "gold_n": gacc.get("n", 0)})
    return {
        "project": {"id": p.id, "name": p.name, "guidelines": p.guidelines, "overlap": p.overlap,
                    "gold_rate": p.gold_rate, "feedback_mode": p.feedback_mode, "source": p.source},
        "progress": {"pairs": n_items, "gold_items": len(gold), "labels": len(triples),
                     "complete_items": sum(1 for n in per_item.values() if n >= p.overlap),
                     "wanted_labels": n_items * p.overlap},
        "annotators": annotators,
        "agreement": summary,
    }


# -- the admin's label browser ---------------------------------------------------------------------------

BROWSE_CHOICES = ("a", "b", "tie", "both_bad")  # a both-bad label is stored as a tie flagged both_bad
BROWSE_PAGE = 50


def _category(choice: str, both_bad: bool) -> str:
    return "both_bad" if both_bad else choice


def browse_labels(s: Session, project_id: int, *, annotator: str | None = None, pair: str | None = None,
                  choice: str | None = None, gold: str | None = None, page: int = 1,
                  per_page: int = BROWSE_PAGE) -> dict:
    """One page of a project's labels, newest first, filtered by annotator name, pair id (substring),
    answer (BROWSE_CHOICES) and gold ("gold" / "regular"); each row with its rationale, the gold result,
    how many of the pair's labels gave the same answer, and how often it was changed."""
    if s.get(Project, project_id) is None:
        raise LookupError("no such project")
    where = [Item.project_id == project_id]
    if annotator:
        where.append(Annotator.name == annotator)
    if pair:
        where.append(Item.uid.contains(pair, autoescape=True))
    if choice:
        where += ([Label.both_bad.is_(True)] if choice == "both_bad"
                  else [Label.choice == choice, Label.both_bad.is_(False)])
    if gold:
        where.append(Item.is_gold.is_(gold == "gold"))
    base = (select(Label, Item, Annotator.name).join(Item, Item.id == Label.item_id)
            .join(Annotator, Annotator.id == Label.annotator_id).where(*where))
    total = s.scalar(select(func.count()).select_from(base.subquery()))
    pages = max(1, -(-total // per_page))
    page = min(page, pages)
    found = s.execute(base.order_by(Label.id.desc()).offset((page - 1) * per_page).limit(per_page)).all()
    item_ids = {item.id for _, item, _ in found}
    votes: dict[int, Counter] = {}
    for item_id, ch, bb, n in s.execute(select(Label.item_id, Label.choice, Label.both_bad, func.count())
                                        .where(Label.item_id.in_(item_ids))
                                        .group_by(Label.item_id, Label.choice, Label.both_bad)):
        votes.setdefault(item_id, Counter())[_category(ch, bb)] += n
    changes = dict(s.execute(select(LabelRevision.label_id, func.count())
                             .where(LabelRevision.label_id.in_([lab.id for lab, _, _ in found]))
                             .group_by(LabelRevision.label_id)).all())
    rows = []
    for lab, item, name in found:
        answer = _category(lab.choice, lab.both_bad)
        rows.append({
            "label_id": lab.id, "pair_id": item.uid, "prompt": item.prompt, "annotator": name,
            "choice": answer, "strength": lab.strength, "rationale": lab.rationale, "left_is_a": lab.left_is_a,
            "feedback_mode": lab.feedback_mode, "time_spent_ms": lab.time_spent_ms,
            "created_at": lab.created_at.isoformat(timespec="seconds"),
            "gold_choice": item.gold_choice if item.is_gold else None,
            "gold_correct": (lab.choice == item.gold_choice) if item.is_gold and item.gold_choice else None,
            "same_answer": votes[item.id][answer], "pair_labels": sum(votes[item.id].values()),
            "changes": changes.get(lab.id, 0)})
    names = list(s.scalars(select(Annotator.name).where(Annotator.project_id == project_id).order_by(Annotator.name)))
    return {"rows": rows, "total": total, "page": page, "pages": pages, "annotators": names,
            "filters": {"annotator": annotator or "", "pair": pair or "", "choice": choice or "",
                        "gold": gold or ""}}
