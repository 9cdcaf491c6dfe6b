"""Which client binaries a backup or restore runs (no database): the server's own major version first, else the
oldest newer one; the script filter that lets a newer pg_restore replay into an older server; what reaches a
manifest of a URL with secret parameters."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from celora_cli.config.settings import parse_database_url
from celora_cli.ops.backup.replay import _pass_on
from celora_cli.ops.backup.tools import ClientTools, choose_client_tools, is_secret_parameter, public_url


def tools(*versions: str) -> list[ClientTools]:
    return [ClientTools(Path(f"/pg/{version}/bin"), version, "system") for version in versions]


@pytest.mark.parametrize(("found", "server", "archive", "expected"), [
    (("18.6", "15.14", "17.2"), 15, 0, "15.14"),  # the server's own major
    (("18.6", "15.14", "15.18"), 15, 0, "15.18"),  # ... its newest minor release
    (("18.6", "17.2"), 16, 0, "17.2"),  # none of its own: the oldest newer one
    (("18.6", "15.14"), 14, 0, "15.14"),
    (("18.6", "15.14"), 15, 18, "18.6"),  # an archive written by pg_dump 18 needs pg_restore 18+
    (("18.6", "15.14"), 18, 15, "18.6"),  # an archive of 15 into an 18 server: 18's own
    (("15.14",), 16, 0, None),  # pg_dump 15 refuses a 16 server
])
def test_the_servers_own_major_else_the_oldest_newer_one(found, server, archive, expected):
    chosen = choose_client_tools(tools(*found), server_major=server, archive_major=archive)
    assert (chosen.version if chosen else None) == expected


SCRIPT = b"""--
-- PostgreSQL database dump
--

\\restrict AbC123

-- Dumped from database version 15.18
-- Dumped by pg_dump version 18.6

BEGIN;

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET transaction_timeout = 0;
SET client_encoding = 'UTF8';
SELECT pg_catalog.set_config('search_path', '', false);

--
-- Name: notes; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.notes (body text);

COPY public.notes (body) FROM stdin;
SET transaction_timeout = 0;
\\.

COMMIT;
"""


def test_only_the_opening_block_loses_only_timeouts_the_server_lacks():
    out = io.BytesIO()
    skipped = _pass_on(io.BytesIO(SCRIPT), out, {"statement_timeout", "lock_timeout",
                                                 "idle_in_transaction_session_timeout", "client_encoding"})
    assert skipped == ["transaction_timeout"]
    assert out.getvalue() == SCRIPT.replace(b"SET transaction_timeout = 0;\n", b"", 1)
    assert b"COPY public.notes (body) FROM stdin;\nSET transaction_timeout = 0;\n" in out.getvalue()  # a row


def test_a_server_that_knows_every_setting_gets_the_script_unchanged():
    out = io.BytesIO()
    known = {"statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout", "transaction_timeout"}
    assert _pass_on(io.BytesIO(SCRIPT), out, known) == []
    assert out.getvalue() == SCRIPT


@pytest.mark.parametrize("name", ["password", "sslpassword", "SSLPassword", "client_secret", "db_password_file"])
def test_secret_parameter_names(name):
    assert is_secret_parameter(name)


def test_the_manifest_url_has_no_secret_parameter():
    url = parse_database_url("postgresql://app:pw@db:5432/celora?sslmode=require&sslpassword=Key-Pass-1")
    shown = public_url(url)
    assert "Key-Pass-1" not in shown and "pw@" not in shown and "sslmode=require" in shown
    assert shown.startswith("postgresql://app:****@db:5432/celora")


def test_a_failed_replay_across_versions_names_both_versions_and_the_fix():
    from celora_cli.ops.backup.replay import Replay
    from celora_cli.ops.backup.restore import _replay_failure
    from tests.support import settings_for

    failed = Replay(3, 'psql:<stdin>:17: ERROR:  unrecognized configuration parameter "lock_wait_total"', True)
    error = _replay_failure(failed, Path("b.dump"), tools("18.6")[0], "15.18", settings_for("postgresql://u@h/db"))
    assert error.exit_code == 13 and "lock_wait_total" in error.message
    assert "pg_restore 18.6" in error.message and "PostgreSQL 15.18" in error.message
    assert "different major versions" in error.message and "role or extension" not in error.message
    assert "postgresql-client-15" in error.hint and "CELORA_PG_BIN" in error.hint
    same = _replay_failure(Replay(1, 'ERROR:  role "app" does not exist', False), Path("b.dump"),
                           tools("15.18")[0], "15.18", settings_for("postgresql://u@h/db"))
    assert "different major versions" not in same.message and "role or extension" in same.hint
