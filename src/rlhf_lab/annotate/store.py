"""The annotation store: projects, items (pairs), annotators, assignments and labels, in SQLAlchemy over
SQLite (a file in the run folder, WAL mode) or PostgreSQL (`--db postgresql+psycopg://…`).

The pipeline's simulated annotators and the people in the web app write to the same tables, so a run can
mix them and every export looks the same. This module imports no torch and no training code.

Durability: a label is acknowledged only after its transaction commits. Each submission carries a
client-generated id (`client_id`, unique), so a retried submit is stored once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    false,
    func,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.schema import CreateColumn

CHOICES = ("a", "b", "tie")
STRENGTHS = ("slightly", "much")
FEEDBACK_MODES = ("foresight", "hindsight")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class Project(Base):
    __tablename__ = "projects"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    guidelines: Mapped[str] = mapped_column(Text, default="")
    overlap: Mapped[int] = mapped_column(Integer, default=1)  # labels wanted per item
    gold_rate: Mapped[float] = mapped_column(Float, default=0.0)  # share of assignments that are gold checks
    feedback_mode: Mapped[str] = mapped_column(String(16), default="foresight")
    source: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    # the last export of its labels: an annotator can no longer change a label stored before it
    exported_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)


class Item(Base):
    """One pair to compare: a prompt and two responses (A and B as stored; display order is per assignment)."""

    __tablename__ = "items"
    # (project, gold?, id): the queue walks a project's pairs in id order (queue.py)
    __table_args__ = (UniqueConstraint("project_id", "uid"), Index("ix_items_queue", "project_id", "is_gold", "id"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    uid: Mapped[str] = mapped_column(String(200))  # the pair id from the pipeline or the import file
    prompt: Mapped[str] = mapped_column(Text)
    response_a: Mapped[str] = mapped_column(Text)
    response_b: Mapped[str] = mapped_column(Text)
    meta: Mapped[dict] = mapped_column(JSON, default=dict)
    is_gold: Mapped[bool] = mapped_column(Boolean, default=False)
    gold_choice: Mapped[str | None] = mapped_column(String(8), nullable=True)
    outcome: Mapped[str | None] = mapped_column(Text, nullable=True)  # revealed first in hindsight mode
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Annotator(Base):
    __tablename__ = "annotators"
    __table_args__ = (UniqueConstraint("project_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16), default="human")  # human | simulated
    group: Mapped[str | None] = mapped_column(String(100), nullable=True)
    group_consent: Mapped[bool] = mapped_column(Boolean, default=False)
    token_hash: Mapped[str | None] = mapped_column(String(200), nullable=True, unique=True)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Assignment(Base):
    """An item in an annotator's queue, with the left/right order they see it in."""

    __tablename__ = "assignments"
    __table_args__ = (UniqueConstraint("item_id", "annotator_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotators.id", ondelete="CASCADE"), index=True)
    left_is_a: Mapped[bool] = mapped_column(Boolean, default=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | done | skipped
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Label(Base):
    __tablename__ = "labels"
    __table_args__ = (UniqueConstraint("item_id", "annotator_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotators.id", ondelete="CASCADE"), index=True)
    assignment_id: Mapped[int | None] = mapped_column(ForeignKey("assignments.id"), nullable=True)
    choice: Mapped[str] = mapped_column(String(8))  # a | b | tie (in stored A/B terms, not screen order)
    # "both are bad" (Chatbot Arena's "tie (bothbad)"): stored as a tie that neither side wins, flagged so
    # that every reader of `choice` stays right and the distinction still reaches the export
    both_bad: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    strength: Mapped[str | None] = mapped_column(String(16), nullable=True)
    rationale: Mapped[str | None] = mapped_column(Text, nullable=True)
    feedback_mode: Mapped[str] = mapped_column(String(16), default="foresight")
    left_is_a: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    time_spent_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    client_id: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)



class LabelRevision(Base):
    """A label's earlier version, kept when its annotator changed it (undo / edit): the label row holds the
    latest version, these rows every one it replaced, so a change never loses what was stored before."""

    __tablename__ = "label_revisions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    label_id: Mapped[int] = mapped_column(ForeignKey("labels.id", ondelete="CASCADE"), index=True)
    choice: Mapped[str] = mapped_column(String(8))
    both_bad: Mapped[bool] = mapped_column(Boolean, default=False)
    strength: Mapped[str | None] = mapped_column(String(16), nullable=True)
    rationale: Mapped[str | None] = mapped_column(Text, nullable=True)
    time_spent_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    stored_at: Mapped[dt.datetime] = mapped_column(DateTime)  # when this version was stored
    replaced_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


# -- the web app's credentials: only SHA-256 digests of random tokens are stored (see security.py) --------


class Invite(Base):
    """A one-time link that signs an annotator in; the admin can issue a new one if a person loses theirs."""

    __tablename__ = "invites"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotators.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime)
    used_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)


class AdminToken(Base):
    """A one-time admin token, printed by `serve` and exchanged for an admin session."""

    __tablename__ = "admin_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime)
    used_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)


class WebSession(Base):
    """A signed-in browser: role admin (all projects) or annotator (one annotator of one project)."""

    __tablename__ = "web_sessions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))  # admin | annotator
    annotator_id: Mapped[int | None] = mapped_column(ForeignKey("annotators.id", ondelete="CASCADE"),
                                                     nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime)



def _item(project_id: int, it: dict) -> Item:
    return Item(project_id=project_id, uid=str(it["uid"]), prompt=it["prompt"], response_a=it["response_a"],
                response_b=it["response_b"], meta=it.get("meta") or {}, is_gold=bool(it.get("is_gold", False)),
                gold_choice=it.get("gold_choice"), outcome=it.get("outcome"))


def _add_missing_columns(engine) -> None:
    """Columns added to a table since a store file was first created (each has a server default)."""
    insp = inspect(engine)
    for table in Base.metadata.sorted_tables:
        have = {c["name"] for c in insp.get_columns(table.name)}
        for column in table.columns:
            if column.name not in have:
                spec = CreateColumn(column).compile(dialect=engine.dialect)
                with engine.begin() as conn:
                    conn.execute(text(f"ALTER TABLE {table.name} ADD COLUMN {spec}"))


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")  # an acknowledged label survives power loss, not just a crash
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def url_for_run(run_dir: str | Path) -> str:
    """The URL of the run folder's labels.sqlite. Built from its parts, so a folder named with `?`, `%` or
    `#` is quoted rather than read as a query string or an escape."""
    path = Path(run_dir).resolve() / "labels.sqlite"
    return URL.create("sqlite", database=str(path)).render_as_string(hide_password=False)


class AnnotationStore:
    """The store behind the pipeline and the web app. `url`: an SQLAlchemy database URL."""

    def __init__(self, url: str, *, create: bool = True):
        self.url = url
        kwargs: dict[str, Any] = {"future": True}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            kwargs.update(pool_size=10, max_overflow=20, pool_pre_ping=True)
            if url.startswith("postgresql+psycopg"):
                # psycopg prepares a statement after 5 runs (PostgreSQL then parses it once per connection),
                # but PostgreSQL may then switch to a generic plan, and for the queue's "first open pair"
                # query that plan scanned every pair (~100× slower): plan each execution for its values.
                # (connect_args replace the URL's own `options`, such as a search_path: keep them)
                kwargs["connect_args"] = {"options": " ".join(filter(None, (
                    make_url(url).query.get("options"), "-c plan_cache_mode=force_custom_plan")))}
        self.engine = create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        if create:
            Base.metadata.create_all(self.engine)
            _add_missing_columns(self.engine)
            for index in Item.__table__.indexes:  # indexes added since a store file was first created
                index.create(self.engine, checkfirst=True)

    @classmethod
    def for_run(cls, run_dir: str | Path) -> AnnotationStore:
        return cls(url_for_run(run_dir))

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed on success, rolled back on any error."""
        s = self._sessions()
        try:
            yield s
            s.commit()
        except BaseException:
            s.rollback()
            raise
        finally:
            s.close()

    @contextmanager
    def write_session(self) -> Iterator[Session]:
        """A transaction for a batch of writes with a savepoint per write (the group-commit writer). On
        SQLite it takes the write lock at once (BEGIN IMMEDIATE): pysqlite would begin the transaction only
        at the first INSERT or UPDATE, so a SAVEPOINT before that would begin one of its own, and its
        RELEASE would commit it."""
        with self.session() as s:
            if self.engine.dialect.name == "sqlite":
                s.execute(text("BEGIN IMMEDIATE"))
            yield s

    # -- projects and items ------------------------------------------------------------------------------

    def create_project(self, name: str, *, guidelines: str = "", overlap: int = 1, gold_rate: float = 0.0,
                       feedback_mode: str = "foresight", source: str = "") -> Project:
        return self.create_project_with_items(name, [], guidelines=guidelines, overlap=overlap,
                                              gold_rate=gold_rate, feedback_mode=feedback_mode, source=source)

    def create_project_with_items(self, name: str, items: list[dict], *, guidelines: str = "", overlap: int = 1,
                                  gold_rate: float = 0.0, feedback_mode: str = "foresight",
                                  source: str = "") -> Project:
        """A project and its items (dicts as for `add_items`) in one transaction: all or nothing."""
        if feedback_mode not in FEEDBACK_MODES:
            raise ValueError(f"feedback_mode must be one of {FEEDBACK_MODES}")
        if overlap < 1:
            raise ValueError("overlap must be at least 1")
        if not 0.0 <= gold_rate < 1.0:
            raise ValueError("gold_rate must be in [0, 1)")
        with self.session() as s:
            p = Project(name=name, guidelines=guidelines, overlap=overlap, gold_rate=gold_rate,
                        feedback_mode=feedback_mode, source=source)
            s.add(p)
            s.flush()
            s.add_all([_item(p.id, it) for it in items])
        return p

    def project(self, name_or_id: str | int) -> Project | None:
        with self.session() as s:
            if isinstance(name_or_id, int):
                return s.get(Project, name_or_id)
            return s.scalar(select(Project).where(Project.name == name_or_id))

    def projects(self) -> list[Project]:
        with self.session() as s:
            return list(s.scalars(select(Project).order_by(Project.id)))

    def add_items(self, project_id: int, items: list[dict]) -> int:
        """Add items all-or-nothing. Each dict: uid, prompt, response_a, response_b, and optionally meta,
        is_gold, gold_choice, outcome."""
        with self.session() as s:
            s.add_all([_item(project_id, it) for it in items])
        return len(items)

    def items(self, project_id: int, *, include_gold: bool = True) -> list[Item]:
        with self.session() as s:
            q = select(Item).where(Item.project_id == project_id).order_by(Item.id)
            if not include_gold:
                q = q.where(Item.is_gold.is_(False))
            return list(s.scalars(q))

    # -- annotators --------------------------------------------------------------------------------------

    def add_annotator(self, project_id: int, name: str, *, kind: str = "human", group: str | None = None,
                      group_consent: bool = False, token_hash: str | None = None) -> Annotator:
        with self.session() as s:
            a = Annotator(project_id=project_id, name=name, kind=kind, group=group, group_consent=group_consent,
                          token_hash=token_hash)
            s.add(a)
        return a

    def annotators(self, project_id: int) -> list[Annotator]:
        with self.session() as s:
            return list(s.scalars(select(Annotator).where(Annotator.project_id == project_id)
                                  .order_by(Annotator.id)))

    # -- labels ------------------------------------------------------------------------------------------

    def record_label(self, *, item_id: int, annotator_id: int, choice: str, client_id: str,
                     strength: str | None = None, rationale: str | None = None,
                     feedback_mode: str = "foresight", left_is_a: bool | None = None,
                     time_spent_ms: int | None = None, assignment_id: int | None = None,
                     created_at: dt.datetime | None = None) -> tuple[Label, bool]:
        """Store one label; returns (label, created). A repeated `client_id` returns the stored label."""
        if choice not in CHOICES:
            raise ValueError(f"choice must be one of {CHOICES}, got {choice!r}")
        if strength is not None and strength not in STRENGTHS:
            raise ValueError(f"strength must be one of {STRENGTHS} or empty, got {strength!r}")
        if feedback_mode not in FEEDBACK_MODES:
            raise ValueError(f"feedback_mode must be one of {FEEDBACK_MODES}")
        try:
            with self.session() as s:
                lab = Label(item_id=item_id, annotator_id=annotator_id, choice=choice,
                            strength=None if choice == "tie" else strength, rationale=rationale,
                            feedback_mode=feedback_mode, left_is_a=left_is_a, time_spent_ms=time_spent_ms,
                            client_id=client_id, assignment_id=assignment_id, created_at=created_at or utcnow())
                s.add(lab)
                if assignment_id is not None:
                    asg = s.get(Assignment, assignment_id)
                    if asg is not None:
                        asg.status = "done"
            return lab, True
        except IntegrityError:
            with self.session() as s:
                existing = s.scalar(select(Label).where(Label.client_id == client_id))
                if existing is None:
                    existing = s.scalar(select(Label).where(Label.item_id == item_id,
                                                            Label.annotator_id == annotator_id))
                if existing is None:
                    raise
                return existing, False

    def add_labels_bulk(self, rows: list[dict]) -> int:
        """Insert many labels in one transaction (the simulated population); all-or-nothing."""
        with self.session() as s:
            s.add_all([Label(**r) for r in rows])
        return len(rows)

    def label_counts(self, project_id: int) -> dict[int, int]:
        with self.session() as s:
            q = (select(Label.item_id, func.count(Label.id)).join(Item, Item.id == Label.item_id)
                 .where(Item.project_id == project_id).group_by(Label.item_id))
            return {item_id: n for item_id, n in s.execute(q)}

    def label_rows(self, project_id: int, *, export: bool = False) -> list[dict]:
        """Every label of a project joined with its item and annotator, as plain dicts. `export`: the rows are
        being exported; the project records when, in the same transaction, so that no label they hold can
        be changed afterwards by its annotator (undo) and leave the export behind."""
        with self.session() as s:
            if export:
                s.execute(update(Project).where(Project.id == project_id).values(exported_at=utcnow()))
            q = (select(Label, Item, Annotator).join(Item, Item.id == Label.item_id)
                 .join(Annotator, Annotator.id == Label.annotator_id)
                 .where(Item.project_id == project_id).order_by(Label.id))
            out = []
            for lab, item, ann in s.execute(q):
                out.append({
                    "label_id": lab.id, "item_id": item.id, "pair_id": item.uid, "prompt": item.prompt,
                    "response_a": item.response_a, "response_b": item.response_b, "meta": item.meta or {},
                    "is_gold": item.is_gold, "gold_choice": item.gold_choice,
                    "annotator_id": ann.name, "annotator_kind": ann.kind,
                    "annotator_group": ann.group if (ann.kind == "simulated" or ann.group_consent) else None,
                    "choice": lab.choice, "both_bad": lab.both_bad, "strength": lab.strength,
                    "rationale": lab.rationale,
                    "feedback_mode": lab.feedback_mode, "left_is_a": lab.left_is_a,
                    "time_spent_ms": lab.time_spent_ms, "created_at": lab.created_at.isoformat(),
                })
            return out
