"""The database layer: Optuna's storage and tnas's Pareto front snapshots, side by side.

``models.py`` holds the tables, ``session.py`` every session, commit and rollback; the schema
changes only through the Alembic migrations in ``migrations/``. Imports neither torch nor optuna.

>>> resolve_url("search.db")
'sqlite:///search.db'
"""

from tnas.search.db.models import FrontMember, FrontSnapshot, PredictorRound
from tnas.search.db.session import Database, StorageError, resolve_url

__all__ = [
    "Database",
    "FrontMember",
    "FrontSnapshot",
    "PredictorRound",
    "StorageError",
    "resolve_url",
]
