"""Alembic environment: connects to DATABASE_URL, as cutover exports it."""

import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy import create_engine, pool

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name)

# The application's models' MetaData, for `alembic revision --autogenerate`.
target_metadata = None


def database_url() -> str:
    url = os.environ.get("DATABASE_URL")
    if not url:
        raise SystemExit("DATABASE_URL is not set (cutover exports it to the migrator)")
    # Heroku and cutover write `postgres://`, which SQLAlchemy does not know; name the
    # driver this project installs (psycopg2) rather than SQLAlchemy's default for
    # `postgresql://`, which changes between versions.
    for scheme in ("postgres://", "postgresql://"):
        if url.startswith(scheme):
            url = "postgresql+psycopg2://" + url[len(scheme):]
    return url


def run_migrations_offline() -> None:
    context.configure(url=database_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(database_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        # One transaction per revision: a failed `upgrade head` stops at the last revision
        # that worked, and `downgrade {version}` takes it back from there.
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            transaction_per_migration=True,
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
