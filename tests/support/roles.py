"""Test helpers for the least-privilege role model (`celora db roles`): group roles with names unique to the test
(CELORA_ROLE_*: roles are cluster-wide, the databases are not), login roles that are their members, URLs that log
in as them, and the clean-up. Reusable by any test that must run as the app's role rather than the superuser."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import psycopg
import pytest

from tests.support import admin_execute, db_name, run_celora

_counter = itertools.count()
SUPERUSER = "celora"  # the test cluster's superuser, who runs the migrations and `db roles --apply`


@dataclass
class RoleSet:
    """Group roles (migrator, app, readonly, cdc) and one login role per group, for one database."""

    database_url: str  # as the superuser
    prefix: str
    logins: dict[str, str] = field(default_factory=dict)  # group key -> login role

    def group(self, key: str) -> str:
        return f"{self.prefix}_{key}"

    @property
    def env(self) -> dict[str, str]:
        """The settings naming this set's groups (with DATABASE_URL as the superuser)."""
        return {"DATABASE_URL": self.database_url, **{f"CELORA_ROLE_{key.upper()}": self.group(key)
                                                      for key in ("migrator", "app", "readonly", "cdc")}}

    def grant_flags(self) -> list[str]:
        return [flag for key, login in self.logins.items() for flag in (f"--grant-{key}", login)]

    def url(self, key: str) -> str:
        """A URL that logs in as the login role of group `key` (the cluster trusts local TCP)."""
        return self.database_url.replace(f"{SUPERUSER}@", f"{self.logins[key]}@", 1)

    def connect(self, key: str, **kwargs) -> psycopg.Connection:
        return psycopg.connect(self.url(key), **kwargs)

    def roles(self) -> list[str]:
        return [*self.logins.values(), *(self.group(k) for k in ("migrator", "app", "readonly", "cdc"))]


def new_role_set(pg_server, database_url: str, *, groups=("migrator", "app", "readonly", "cdc")) -> RoleSet:
    """Login roles for `groups` (created here, as the operator would: celora never creates a login role)."""
    prefix = f"t{os.getpid()}_{next(_counter)}"
    roles = RoleSet(database_url, prefix, {key: f"{prefix}_{key}_login" for key in groups})
    admin_execute(pg_server, "; ".join(f"CREATE ROLE {login} LOGIN" for login in roles.logins.values()))
    return roles


def apply_roles(roles: RoleSet, *extra: str):
    """`celora db roles --apply` as the superuser, granting each login its group; asserts it succeeded."""
    result = run_celora("db", "roles", "--apply", *roles.grant_flags(), *extra, env=roles.env)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def drop_role_set(pg_server, roles: RoleSet) -> None:
    """Drop what the groups own in the test's database and their grants, then every role of the set."""
    existing = {r for (r,) in _rows(pg_server.url("postgres"), "SELECT rolname FROM pg_roles WHERE rolname = "
                                    "ANY(%s)", (roles.roles(),))}
    if not existing:
        return
    database = db_name(roles.database_url)
    if _rows(pg_server.url("postgres"), "SELECT 1 FROM pg_database WHERE datname = %s", (database,)):
        # The test's database goes with its fixture: what the groups own there is dropped with their grants. One
        # role per statement: a default privilege of one role for another, dropped twice in one DROP OWNED, is
        # "could not find tuple for default ACL".
        for role in sorted(existing):
            admin_execute(pg_server, f"DROP OWNED BY {role} CASCADE", database)
    for role in sorted(existing):
        admin_execute(pg_server, f"DROP OWNED BY {role}; DROP ROLE {role}")


def _rows(url: str, sql: str, params=()) -> list[tuple]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


@pytest.fixture(name="least_privilege")
def least_privilege_fixture(pg_server, migrated_db) -> Iterator[RoleSet]:
    """A migrated database after `celora db roles --apply`, with a login role in each group. Import
    least_privilege_fixture into a test module to use it as `least_privilege`."""
    roles = new_role_set(pg_server, migrated_db)
    try:
        apply_roles(roles)
        yield roles
    finally:
        drop_role_set(pg_server, roles)
