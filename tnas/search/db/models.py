"""SQLAlchemy models of the tables tnas keeps beside Optuna's, in the same database.

Every table name starts with ``tnas_`` so it never collides with Optuna's own tables. The schema
is created and changed only by the Alembic migrations in ``migrations/versions``; these models
must match the latest migration (``tests/search/test_db.py`` checks that they do).

>>> FrontSnapshot.__tablename__, FrontMember.__tablename__, PredictorRound.__tablename__
('tnas_front_snapshots', 'tnas_front_members', 'tnas_predictor_rounds')
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Double, ForeignKey, Index, Integer, MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_N_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back timezone-aware (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: give a timezone-aware one")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utc_now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class FrontSnapshot(Base):
    """The Pareto front of one study at one moment, with the hypervolume it dominates."""

    __tablename__ = "tnas_front_snapshots"
    # (study_name, id) finds a study's latest snapshot from the index alone.
    __table_args__ = (Index("ix_tnas_front_snapshots_study_name_id", "study_name", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_name: Mapped[str] = mapped_column(String(512))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    n_trials: Mapped[int] = mapped_column(Integer)
    hypervolume: Mapped[float] = mapped_column(Double)
    reference_point: Mapped[list[float]] = mapped_column(JSON)
    objectives: Mapped[list[dict[str, str]]] = mapped_column(JSON)

    members: Mapped[list[FrontMember]] = relationship(
        back_populates="snapshot",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="FrontMember.id",
    )


class FrontMember(Base):
    """One trial on a snapshot's front: its config and its objective values, in objective order."""

    __tablename__ = "tnas_front_members"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    snapshot_id: Mapped[int] = mapped_column(
        ForeignKey("tnas_front_snapshots.id", ondelete="CASCADE"), index=True
    )
    trial_number: Mapped[int] = mapped_column(Integer)
    config_hash: Mapped[str] = mapped_column(String(64))
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    values: Mapped[list[float]] = mapped_column(JSON)

    snapshot: Mapped[FrontSnapshot] = relationship(back_populates="members")


class PredictorRound(Base):
    """How well one round's predictor of one objective did, for predictor-guided samplers.

    The predictor fitted at round `round - 1` on `n_train` trials is scored on the `n_test`
    trials evaluated since (held out from its fit): Kendall tau, Spearman and MAPE. `family` is
    the family chosen for this round by cross-validation, with its CV score `cv_kendall`.
    Scores are null where undefined (fewer than two held-out trials, a constant target).
    """

    __tablename__ = "tnas_predictor_rounds"
    __table_args__ = (Index("ix_tnas_predictor_rounds_study_name_id", "study_name", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_name: Mapped[str] = mapped_column(String(512))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    round: Mapped[int] = mapped_column(Integer)
    objective: Mapped[str] = mapped_column(String(256))
    family: Mapped[str] = mapped_column(String(64))
    n_train: Mapped[int] = mapped_column(Integer)
    n_test: Mapped[int] = mapped_column(Integer)
    kendall: Mapped[float | None] = mapped_column(Double, nullable=True)
    spearman: Mapped[float | None] = mapped_column(Double, nullable=True)
    mape: Mapped[float | None] = mapped_column(Double, nullable=True)
    cv_kendall: Mapped[float | None] = mapped_column(Double, nullable=True)


class DriverHeartbeat(Base):
    """A search driver that is running a study now: the driver writes `beat_at` every few
    seconds and deletes its row when it stops. A row whose beat is old belongs to a driver
    that died (killed, its machine gone): `tnas search resume` may take its trials over."""

    __tablename__ = "tnas_driver_heartbeats"
    __table_args__ = (Index("ix_tnas_driver_heartbeats_study_name", "study_name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # a uuid4 hex
    study_name: Mapped[str] = mapped_column(String(512))
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    beat_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
