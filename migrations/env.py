"""Alembic environment for the Celora schema.

celora drives this from code (celora_cli.migrations) and hands over its own direct connection in
`config.attributes["connection"]`. Run by hand (`alembic -c ...`), it connects with celora's settings
on the direct URL (DIRECT_DATABASE_URL, else DATABASE_URL), never through PgBouncer.
"""

from __future__ import annotations

from alembic import context

from celora_cli.db.models import Base

config = context.config
target_metadata = Base.metadata


def _configure(**kwargs) -> None:
    context.configure(
        target_metadata=target_metadata,
        transaction_per_migration=True,  # a failing migration rolls back alone; earlier ones stay
        compare_type=True,
        compare_server_default=True,
        on_version_apply=config.attributes.get("on_version_apply") or (),
        **kwargs,
    )


def run_migrations_offline() -> None:
    from celora_cli.db.engine import direct_url
    from celora_cli.settings import load_settings

    settings = config.attributes.get("celora_settings") or load_settings()
    _configure(url=direct_url(settings).sqlalchemy_url(), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
        return

    from celora_cli.db.engine import get_direct_engine
    from celora_cli.settings import load_settings

    engine = get_direct_engine(config.attributes.get("celora_settings") or load_settings())
    try:
        with engine.connect() as connection:
            _configure(connection=connection)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
