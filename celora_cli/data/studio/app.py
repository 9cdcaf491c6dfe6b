"""The studio's ASGI app: starlette-admin over every celora model, behind StudioGuard. No globals: each call
builds a new app around the engine it is given."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import HTMLResponse, RedirectResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette_admin.contrib.sqla import Admin

from celora_cli.config.settings import DatabaseURL
from celora_cli.data.studio.conflicts import conflicts_of, loaded_input
from celora_cli.data.studio.console import DEFAULT_TIMEOUT, ConsoleView
from celora_cli.data.studio.copy_rows import CopyView
from celora_cli.data.studio.diagram import DiagramView
from celora_cli.data.studio.history import HistoryView
from celora_cli.data.studio.list_rows import row_actions_cell, static_url
from celora_cli.data.studio.pages import StudioTuning
from celora_cli.data.studio.security import StudioGuard
from celora_cli.data.studio.views import build_views, is_sensitive
from celora_cli.db.errors import translate
from celora_cli.db.models import Base
from celora_cli.safety.local_http import allowed_hosts

TEMPLATES = Path(__file__).parent / "templates"
BASE_PATH = "/studio"


@dataclass(frozen=True)
class StudioOptions:
    host: str
    port: int
    token: str
    read_only: bool
    console_timeout: float = DEFAULT_TIMEOUT  # CELORA_STUDIO_CONSOLE_TIMEOUT
    tuning: StudioTuning = field(default_factory=StudioTuning)  # the list pages' time bounds (settings)


def create_app(engine: Engine, url: DatabaseURL, options: StudioOptions) -> Starlette:
    """The studio for the database behind `engine` (`url` names it in error messages, masked)."""
    sessions = sessionmaker(engine, expire_on_commit=False)
    if options.read_only:
        _read_only_transactions(sessions)
    admin = Admin(
        sessions,
        title="celora studio" + (" (read-only)" if options.read_only else ""),
        base_url=BASE_PATH,
        templates_dir=str(TEMPLATES),
        secret_key=options.token,
        middlewares=[Middleware(DatabaseErrorPage, url=url)],
    )
    views = build_views(Base, read_only=options.read_only, database_url=url, tuning=options.tuning)
    for view in views:
        admin.add_view(view)
    _add_studio_pages(admin, engine, url, options, views)
    # The templates are the installed package's: checking each one's mtime on every include cost ~10 ms a page.
    admin.templates.env.auto_reload = False
    app = Starlette(routes=[Route("/", lambda request: RedirectResponse(f"{BASE_PATH}/", status_code=307))],
                    middleware=[Middleware(StudioGuard, token=options.token, port=options.port,
                                           hosts=allowed_hosts(options.host, options.port),
                                           read_only=options.read_only)])
    app.state.studio_url = url
    app.state.read_only = options.read_only
    admin.mount_to(app)
    return app


def _add_studio_pages(admin: Admin, engine: Engine, url: DatabaseURL, options: StudioOptions, views: list) -> None:
    """The pages beside the tables: SQL console, schema diagram (menu), a row's history and copying rows."""
    hidden = {str(table.name): {column.name for column in table.columns if is_sensitive(str(table.name), column)}
              for table in Base.metadata.tables.values()}
    admin.add_view(ConsoleView(engine, writable=not options.read_only, timeout=options.console_timeout,
                               sensitive=sorted({name for names in hidden.values() for name in names}),
                               database_url=url))
    admin.add_view(DiagramView(Base.metadata, {view.mapper.local_table.fullname: f"../{view.key}/list"
                                               for view in views}))
    admin.add_view(HistoryView(hidden))
    admin.add_view(CopyView())
    admin.templates.env.globals.update(celora_loaded_input=loaded_input, celora_conflicts=conflicts_of,
                                       celora_row_actions=row_actions_cell, static_url=static_url)


def _read_only_transactions(sessions: sessionmaker) -> None:
    """Every transaction the studio opens is READ ONLY: PostgreSQL itself refuses a write that got past
    the guard. Per transaction rather than `default_transaction_read_only` on the connection: through
    PgBouncer in transaction mode a session setting would stay on a server connection other clients reuse."""

    @event.listens_for(sessions, "after_begin")
    def _read_only(session: Session, transaction, connection) -> None:
        if not transaction.nested:  # a savepoint is inside the read-only transaction already
            connection.exec_driver_sql("SET TRANSACTION READ ONLY")


class DatabaseErrorPage:
    """A database error while reading (list, detail) becomes a page with celora's message and hint."""

    def __init__(self, app: ASGIApp, url: DatabaseURL) -> None:
        self.app = app
        self.url = url

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except DBAPIError as exc:
            if started:
                raise

            error = translate(exc, self.url)
            body = (f"<!doctype html><title>celora studio: database error</title><h1>Database error</h1>"
                    f"<p class='celora-error'>{html.escape(error.message)}</p>"
                    f"<p class='celora-hint'>{html.escape(error.hint or '')}</p>"
                    f"<p><a href='javascript:history.back()'>Back</a></p>")
            await HTMLResponse(body, status_code=500)(scope, receive, send)
