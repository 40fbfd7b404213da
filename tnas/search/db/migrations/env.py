"""Alembic environment for tnas's own tables, run by ``Database`` on every open.

Optuna keeps its schema revision in Alembic's default ``alembic_version`` table, so ours lives in
``tnas_alembic_version``, and autogenerate looks only at tables named ``tnas_*``. There is no
alembic.ini: ``tnas.search.db.session.alembic_config(url)`` builds the Config in code. To add a
revision after changing ``models.py``::

    python -c "from alembic import command; from tnas.search.db.session import alembic_config; \
command.revision(alembic_config('sqlite:///dev.db'), 'what changed', autogenerate=True)"
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from tnas.search.db.models import Base

VERSION_TABLE = "tnas_alembic_version"
TABLE_PREFIX = "tnas_"


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    return type_ != "table" or (name or "").startswith(TABLE_PREFIX)


def configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        include_name=include_name,
        render_as_batch=True,  # SQLite can ALTER only through table copies
        **kwargs,
    )


def run_migrations_offline() -> None:
    configure(url=context.config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        # Database passes a connection already inside the transaction (and lock) it commits.
        configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(
        context.config.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool
    )
    with engine.connect() as connection:
        configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
