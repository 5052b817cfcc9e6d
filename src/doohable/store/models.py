"""SQLAlchemy 2 tables: images and their sources, users, the append-only vote log,
derived ratings, model scores and moderation decisions.

Schema changes go here, then into a new Alembic revision (see store/migrations)."""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    pass


class Role(enum.StrEnum):
    voter = "voter"
    moderator = "moderator"
    admin = "admin"


class Status(enum.StrEnum):
    pending = "pending"
    approved = "approved"
    rejected = "rejected"


class Image(Base):
    """One distinct image (by SHA-256 of its bytes); the bytes live in the blob store."""

    __tablename__ = "images"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    phash: Mapped[str] = mapped_column(String(16), index=True)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    format: Mapped[str] = mapped_column(String(16))
    size_bytes: Mapped[int] = mapped_column(Integer)
    near_duplicate_of: Mapped[int | None] = mapped_column(ForeignKey("images.id"), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default=Status.pending.value, index=True)
    nsfw: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)

    sources: Mapped[list[Source]] = relationship(back_populates="image", cascade="all, delete-orphan")


class Source(Base):
    """Where (and by whom) an image was seen: a file, a URL, an upload or the userscript."""

    __tablename__ = "sources"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # file | url | upload | userscript
    uri: Mapped[str] = mapped_column(Text)  # file path or image URL
    network: Mapped[str | None] = mapped_column(String(32), nullable=True)  # instagram | twitter | ...
    page_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    author: Mapped[str | None] = mapped_column(String(255), nullable=True)
    caption: Mapped[str | None] = mapped_column(Text, nullable=True)
    posted_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    added_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    image: Mapped[Image] = relationship(back_populates="sources")


class User(Base):
    """A person: voter, moderator or admin. Only a SHA-256 of the API token is stored."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    role: Mapped[str] = mapped_column(String(16), default=Role.voter.value)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    slack_user_id: Mapped[str | None] = mapped_column(String(32), unique=True, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PairToken(Base):
    """A pair shown to one voter; single use: the vote that consumes it records ``used_at``."""

    __tablename__ = "pair_tokens"

    token: Mapped[str] = mapped_column(String(64), primary_key=True)
    voter_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    left_id: Mapped[int] = mapped_column(ForeignKey("images.id"))
    right_id: Mapped[int] = mapped_column(ForeignKey("images.id"))
    issued_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    used_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Vote(Base):
    """Append-only log of pairwise votes. ``winner_id`` is NULL for "can't decide" (a tie).

    An undo is a new row with ``undoes_vote_id`` set; rows are never updated or deleted."""

    __tablename__ = "votes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    voter_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    left_id: Mapped[int] = mapped_column(ForeignKey("images.id"))
    right_id: Mapped[int] = mapped_column(ForeignKey("images.id"))
    winner_id: Mapped[int | None] = mapped_column(ForeignKey("images.id"), nullable=True)
    pair_token: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    channel: Mapped[str] = mapped_column(String(16), default="api")  # api | web | slack
    undoes_vote_id: Mapped[int | None] = mapped_column(ForeignKey("votes.id"), nullable=True, unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


class Rating(Base):
    """A rating derived from the vote log, per image and method (``elo`` | ``bt``)."""

    __tablename__ = "ratings"

    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    method: Mapped[str] = mapped_column(String(16), primary_key=True)
    rating: Mapped[float] = mapped_column(Float)
    uncertainty: Mapped[float | None] = mapped_column(Float, nullable=True)
    votes: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class Score(Base):
    """A model's score of an image (on the model's own scale), with the model's name and version."""

    __tablename__ = "scores"
    __table_args__ = (
        UniqueConstraint("image_id", "model", "model_version"),
        # the score API's percentile counts one model version's scores below a value
        Index("ix_scores_model_version_score", "model", "model_version", "score"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    model: Mapped[str] = mapped_column(String(100))
    model_version: Mapped[str] = mapped_column(String(64))
    score: Mapped[float] = mapped_column(Float, index=True)
    # a combined scorer's parts, {"photo": 3.2, "face": 4.1 or null}; null for a single model
    parts: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Decision(Base):
    """Every moderation decision, by a person (``actor_id``) or a rule (``rule``); append-only."""

    __tablename__ = "decisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    decision: Mapped[str] = mapped_column(String(16))  # approved | rejected | flagged
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    rule: Mapped[str | None] = mapped_column(String(100), nullable=True)
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


class Setting(Base):
    """Editable policy values (e.g. the auto-approve threshold), set by moderators."""

    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[dict] = mapped_column(JSON)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


Index("ix_votes_voter_created", Vote.voter_id, Vote.created_at)
