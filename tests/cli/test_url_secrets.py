"""Secrets in a database URL besides its password (`?sslpassword=`, any parameter whose name holds "password" or
"secret", percent-encoded names too) never reach any output: --json, the Prometheus exposition (replica labels),
error messages."""

from __future__ import annotations

import pytest

from tests.support import run_celora

SECRET = "Sslpw-Leak-7f3a9"  # distinctive: found anywhere in an output means it leaked


def _with(url: str, query: str) -> str:
    return url + ("&" if "?" in url else "?") + query


@pytest.mark.parametrize("parameter", ["sslpassword", "ssl%70assword", "SSLPassword"])
def test_a_secret_parameter_never_appears_in_status_health_or_metrics(migrated_db, parameter):
    url = _with(migrated_db, f"{parameter}={SECRET}")
    env = {"DATABASE_URL": url, "CELORA_REPLICA_URLS": url}  # a replica: its URL is a label and a JSON field
    runs = {
        "status --json": run_celora("db", "status", "--json", env=env),
        "health --json": run_celora("db", "health", "--json", env=env),
        "health --format prometheus": run_celora("db", "health", "--format", "prometheus", env=env),
    }
    for name, run in runs.items():
        assert SECRET not in run.stdout + run.stderr, name
        assert "Traceback" not in run.stderr, name
    # The URL is shown (masked), so the test would see the secret if masking missed it.
    assert f"{parameter}=****" in runs["health --json"].stdout
    assert f"{parameter}=****" in runs["health --format prometheus"].stdout


@pytest.mark.parametrize("parameter", ["app_secret", "Vault%5FPassword", "oauth_client_secret"])
def test_a_secret_parameter_never_appears_in_an_error_message(migrated_db, parameter):
    # libpq does not know these parameters (or this version does not): the connection fails, and the message
    # names the URL, masked.
    url = _with(migrated_db, f"{parameter}={SECRET}&connect_timeout=3")
    for args in (("db", "status"), ("db", "status", "--json"), ("db", "health", "--json")):
        run = run_celora(*args, env={"DATABASE_URL": url})
        assert SECRET not in run.stdout + run.stderr, (args, run.stdout, run.stderr)
        assert run.returncode != 70 and "Traceback" not in run.stderr, run.stderr


def test_a_malformed_url_with_a_secret_parameter_is_refused_without_it():
    url = f"postgresql://app@db:notaport/celora?sslpassword={SECRET}"
    run = run_celora("db", "status", "--json", env={"DATABASE_URL": url})
    assert run.returncode == 3 and "sslpassword=****" in run.stdout
    assert SECRET not in run.stdout + run.stderr
