"""`celora db roles`: the least-privilege role model, made (`--apply`), shown (`--dry-run`) and checked (`--check`).

Four group roles (NOLOGIN; names from CELORA_ROLE_*), and login roles that are granted membership:

- migrator: owns every object in the migration schema (and may create in it); runs `migrate-deploy`. Its login
  roles get `ALTER ROLE login SET role = migrator`, so what their migrations create is owned by the group (and
  picks up the default privileges below), not by the login.
- app: SELECT, INSERT, UPDATE, DELETE on the app tables and USAGE, SELECT on their sequences. Nothing on
  audit_log, audit_seal or celora's bookkeeping tables (alembic_version, the migration journal) but SELECT on
  celora_metadata, whose environment stamp every role's production guard reads (an unreadable stamp counts as
  production); no TRUNCATE, no TRIGGER, no CREATE on the schema. cdc reads celora_metadata too.
- readonly: SELECT on the app tables, audit_log and the bookkeeping tables (studio --read-only, reporting,
  `db status`, replicas).
- cdc: SELECT on the app tables (Debezium's snapshot). REPLICATION is a role *attribute*, never inherited
  through membership, so it is set on each cdc login role itself.

One comparison drives all three modes: the live catalog (pg_class.relacl, pg_namespace.nspacl, pg_default_acl,
pg_auth_members, pg_roles) against the wanted state gives a list of differences, each with the statements that
fix it. `--check` reports them, `--dry-run` prints the statements, `--apply` runs them in one transaction (so a
missing privilege changes nothing) and compares again. Passwords are never read, set or printed: login roles are
created by the operator, and only named here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from celora_cli.config.settings import Settings, setting_name
from celora_cli.db.connect import connect, direct_url
from celora_cli.db.errors import postgres_message, translating
from celora_cli.errors import ConfigError, DatabaseError, ExitCode
from celora_cli.ops.roles_catalog import (
    DEFAULT_ACL,
    OTHER_OBJECTS,
    RELATIONS,
    SCHEMA_ACL,
    grant_map,
    grantee_sql,
    privilege_order,
    quoter,
    read_roles,
)

APPLICATION_NAME = "celora db roles"

TABLE_DML = ("SELECT", "INSERT", "UPDATE", "DELETE")
AUDIT_TABLES = ("audit_log", "audit_seal")
# Written by celora itself, outside the models: the app has no business with them.
BOOKKEEPING_TABLES = ("alembic_version", "celora_metadata")
JOURNAL_PREFIX = "celora_migrations"  # migrate/journal.py's JOURNAL_TABLE (and anything it may add beside it)

# What each step needs, and what the managed providers' admin role is called. Shown in the hint when the server
# refuses a step (SQLSTATE 42501), and in the README.
NEEDS = {
    "create_role": "CREATEROLE (RDS/Aurora: rds_superuser has it; Cloud SQL: cloudsqlsuperuser; Azure: "
                   "azure_pg_admin)",
    "grant_role": "ADMIN OPTION on the group role (PostgreSQL 16+: the role that created it has it) or, before 16, "
                  "CREATEROLE",
    "role_setting": "CREATEROLE (and on PostgreSQL 16+ ADMIN OPTION on the login role)",
    "self_grant": "ADMIN OPTION on the migrator group (the role that created it has it)",
    "owner": "ownership of the object (or membership in its owner) and membership in the migrator group; a "
             "managed provider's admin role (rds_superuser, cloudsqlsuperuser, azure_pg_admin) does not own "
             "objects another role created: run it as their owner",
    "schema": "ownership of the schema (on PostgreSQL 15+ public belongs to pg_database_owner: the database's owner)",
    "grant": "membership in the object's owner (the migrator group)",
    "default": "membership in the migrator group",
    "replication": "superuser (PostgreSQL 16+: CREATEROLE and REPLICATION). RDS/Aurora: instead run "
                   "`GRANT rds_replication TO login` as rds_superuser; Cloud SQL: cloudsqlsuperuser may ALTER ROLE "
                   "... REPLICATION; Azure: azure_pg_admin may",
}


@dataclass(frozen=True)
class Statement:
    sql: str
    needs: str  # a key of NEEDS

    def to_json(self) -> dict[str, str]:
        return {"sql": self.sql, "needs": NEEDS[self.needs]}


@dataclass(frozen=True)
class Difference:
    kind: str  # role, attribute, owner, privilege, default_privilege, membership, setting, warning
    subject: str  # what it is about: "table audit_log", "role celora_app", ...
    change: str  # missing, extra, wrong
    detail: str
    statements: tuple[Statement, ...] = ()

    def describe(self) -> str:
        return f"{self.change} {self.kind}: {self.subject}: {self.detail}"

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "subject": self.subject, "change": self.change, "detail": self.detail,
                "sql": [s.sql for s in self.statements]}


@dataclass(frozen=True)
class Logins:
    """Login roles to make members of each group (the --grant-* options)."""

    migrator: tuple[str, ...] = ()
    app: tuple[str, ...] = ()
    readonly: tuple[str, ...] = ()
    cdc: tuple[str, ...] = ()

    def by_group(self, names: dict[str, str]) -> dict[str, tuple[str, ...]]:
        return {names["migrator"]: self.migrator, names["app"]: self.app, names["readonly"]: self.readonly,
                names["cdc"]: self.cdc}

    def all(self) -> set[str]:
        return {*self.migrator, *self.app, *self.readonly, *self.cdc}


@dataclass
class RolesPlan:
    database: str  # masked URL
    schema: str
    roles: dict[str, str]  # group -> name
    differences: list[Difference] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def matches(self) -> bool:
        return not self.differences

    @property
    def exit_code(self) -> int:
        return ExitCode.OK if self.matches else ExitCode.ROLES_DIFFER

    @property
    def statements(self) -> list[Statement]:
        ordered = sorted((s for d in self.differences for s in d.statements), key=lambda s: _STEP_ORDER[s.needs])
        seen: set[str] = set()
        unique = []
        for statement in ordered:
            if statement.sql not in seen:
                seen.add(statement.sql)
                unique.append(statement)
        return unique

    def to_json(self) -> dict[str, Any]:
        return {"database": self.database, "schema": self.schema, "roles": self.roles, "matches": self.matches,
                "differences": [d.to_json() for d in self.differences], "warnings": self.warnings,
                "sql": [s.sql for s in self.statements]}


@dataclass
class RolesResult:
    plan: RolesPlan  # what was applied
    after: RolesPlan  # compared again afterwards

    def to_json(self) -> dict[str, Any]:
        return {**self.after.to_json(), "applied": [s.sql for s in self.plan.statements]}

    @property
    def exit_code(self) -> int:
        return self.after.exit_code  # differences that remain after applying


# Roles first, then what may need them: memberships that let the running role act as the migrator, ownership,
# grants, default privileges, login memberships and attributes.
_STEP_ORDER = {"create_role": 0, "self_grant": 1, "schema": 2, "owner": 3, "grant": 4, "default": 5,
               "grant_role": 6, "role_setting": 7, "replication": 8}


# -- the comparison ------------------------------------------------------------------------------------------------

def _names(settings: Settings) -> dict[str, str]:
    return {"migrator": settings.role_migrator, "app": settings.role_app, "readonly": settings.role_readonly,
            "cdc": settings.role_cdc}


def _protected(table: str) -> bool:
    return table in AUDIT_TABLES or table in BOOKKEEPING_TABLES or table.startswith(JOURNAL_PREFIX)


def compare(conn, settings: Settings, logins: Logins, *, database: str) -> RolesPlan:
    """The differences between the live catalog and the role model, each with the statements that fix it."""
    names = _names(settings)
    groups = set(names.values())
    overlap = groups & logins.all()
    if overlap:
        raise ConfigError(f"{', '.join(sorted(overlap))} is a group role of the model, not a login role.",
                          "Name the login roles (those your URLs use) after --grant-*, e.g. --grant-app app_login.")
    schema = conn.execute("SELECT current_schema()").fetchone()[0]
    if schema is None:
        raise ConfigError("The connection has no current schema (its search_path names no existing schema).",
                          "Set ?schema=NAME in DIRECT_DATABASE_URL to the schema the migrations use.")
    q = quoter(conn, {schema, *groups, *logins.all()})
    plan = RolesPlan(database, schema, names)
    roles = read_roles(conn, groups | logins.all())
    missing_logins = sorted(logins.all() - set(roles))
    if missing_logins:
        raise ConfigError(f"Login role(s) {', '.join(missing_logins)} do not exist on the server.",
                          "Create each first, with its password, outside celora (celora never handles passwords): "
                          "CREATE ROLE app_login LOGIN PASSWORD '...'; then run `celora db roles --apply` again.")
    migrator, app, readonly, cdc = names["migrator"], names["app"], names["readonly"], names["cdc"]
    add = plan.differences.append

    # Group roles: exist, NOLOGIN.
    for group in (migrator, app, readonly, cdc):
        role = roles.get(group)
        if role is None:
            add(Difference("role", f"role {group}", "missing", "the group role does not exist",
                           (Statement(f"CREATE ROLE {q(group)} NOLOGIN", "create_role"),)))
        elif role.login:
            add(Difference("attribute", f"role {group}", "wrong", "a group role must be NOLOGIN (log in as a "
                           "member)", (Statement(f"ALTER ROLE {q(group)} NOLOGIN", "create_role"),)))

    # Changing owners and default privileges needs membership in the migrator group (a superuser has it anyway).
    acting = conn.execute("SELECT rolsuper OR EXISTS (SELECT FROM pg_roles g WHERE g.rolname = %s AND "
                          "pg_has_role(r.oid, g.oid, 'MEMBER')) FROM pg_roles r WHERE r.rolname = current_user",
                          (migrator,)).fetchone()[0]
    act_as_migrator = () if acting else (Statement(f"GRANT {q(migrator)} TO CURRENT_USER", "self_grant"),)

    # The schema: the migrator may create in it; nobody else may; the others may use it.
    schema_owner, schema_acl = conn.execute(SCHEMA_ACL, {"schema": q(schema)}).fetchone()
    schema_grants = grant_map(schema_acl)
    if schema_owner != migrator:
        for privilege in ("USAGE", "CREATE"):
            if privilege not in schema_grants.get(migrator, set()):
                add(Difference("privilege", f"schema {schema}", "missing", f"{migrator} needs {privilege}",
                               (Statement(f"GRANT {privilege} ON SCHEMA {q(schema)} TO {q(migrator)}", "schema"),)))
    for grantee in (app, readonly, cdc):
        if "USAGE" not in schema_grants.get(grantee, set()):
            add(Difference("privilege", f"schema {schema}", "missing", f"{grantee} needs USAGE",
                           (Statement(f"GRANT USAGE ON SCHEMA {q(schema)} TO {q(grantee)}", "schema"),)))
    for grantee in sorted({app, readonly, cdc, "PUBLIC", *logins.all()}):
        if "CREATE" in schema_grants.get(grantee, set()):
            add(Difference("privilege", f"schema {schema}", "extra", f"{grantee} may CREATE in it (DDL)",
                           (Statement(f"REVOKE CREATE ON SCHEMA {q(schema)} FROM {grantee_sql(q, grantee)}",
                                      "schema"),)))

    # Every object in the schema belongs to the migrator.
    relations = conn.execute(RELATIONS, {"schema": q(schema)}).fetchall()
    for name, kind, owner, owned_by, _acl in relations:
        if owner != migrator and not (kind == "S" and owned_by):  # an owned sequence follows its table
            keyword = {"S": "SEQUENCE", "v": "VIEW", "m": "MATERIALIZED VIEW", "f": "FOREIGN TABLE"}.get(kind,
                                                                                                       "TABLE")
            add(Difference("owner", f"{keyword.lower()} {name}", "wrong", f"owned by {owner}, not {migrator}",
                           (*act_as_migrator,
                            Statement(f"ALTER {keyword} {q(schema)}.{q(name)} OWNER TO {q(migrator)}", "owner"))))
    for keyword, signature, owner in conn.execute(OTHER_OBJECTS, {"schema": q(schema)}):
        if owner != migrator:
            label = "function" if keyword == "ROUTINE" else keyword.lower()
            add(Difference("owner", f"{label} {signature}", "wrong", f"owned by {owner}, not {migrator}",
                           (*act_as_migrator, Statement(f"ALTER {keyword} {signature} OWNER TO {q(migrator)}",
                                                        "owner"))))

    # Privileges on each table and sequence.
    tables = {name for name, kind, *_ in relations if kind != "S"}
    watched = {app, readonly, cdc, "PUBLIC", *logins.all()}
    for name, kind, owner, owned_by, acl in relations:
        granted = grant_map(acl)
        if kind == "S":
            app_sequence = owned_by in tables and not _protected(owned_by)
            wanted = {app: {"USAGE", "SELECT"}} if app_sequence else {}
            subject, keyword = f"sequence {name}", "SEQUENCE"
        else:
            subject, keyword = f"table {name}", "TABLE"
            if name in AUDIT_TABLES:
                wanted = {readonly: {"SELECT"}} if name == "audit_log" else {}
            elif name == "celora_metadata":  # every role's production guard reads the environment stamp there
                wanted = {app: {"SELECT"}, readonly: {"SELECT"}, cdc: {"SELECT"}}
            elif _protected(name):
                wanted = {readonly: {"SELECT"}}
            else:
                wanted = {app: set(TABLE_DML), readonly: {"SELECT"}, cdc: {"SELECT"}}
        target = f"{keyword} {q(schema)}.{q(name)}"
        for grantee, privileges in wanted.items():
            lacking = sorted(privileges - granted.get(grantee, set()), key=privilege_order)
            if lacking:
                add(Difference("privilege", subject, "missing", f"{grantee} needs {', '.join(lacking)}",
                               (*act_as_migrator, Statement(f"GRANT {', '.join(lacking)} ON {target} TO "
                                                            f"{q(grantee)}", "grant"))))
        # On celora's own tables nobody but the owner holds anything not wanted; elsewhere, the roles in view.
        in_view = set(granted) if kind != "S" and _protected(name) or kind == "S" and not wanted else watched
        for grantee in sorted(in_view - {owner, migrator}):
            extra = sorted(granted.get(grantee, set()) - wanted.get(grantee, set()), key=privilege_order)
            if extra:
                add(Difference("privilege", subject, "extra", f"{grantee} holds {', '.join(extra)}",
                               (*act_as_migrator, Statement(f"REVOKE {', '.join(extra)} ON {target} FROM "
                                                            f"{grantee_sql(q, grantee)}", "grant"))))

    # Default privileges: tables and sequences later migrations create get the same grants.
    defaults: dict[tuple[str, str], set[str]] = {}
    if migrator in roles:
        for objtype, grantee, privilege in conn.execute(DEFAULT_ACL, {"migrator": migrator, "schema": q(schema)}):
            defaults.setdefault((objtype, grantee), set()).add(privilege)
    wanted_defaults = {("r", app): set(TABLE_DML), ("r", readonly): {"SELECT"}, ("r", cdc): {"SELECT"},
                       ("S", app): {"USAGE", "SELECT"}}
    prefix = f"ALTER DEFAULT PRIVILEGES FOR ROLE {q(migrator)} IN SCHEMA {q(schema)}"
    for (objtype, grantee), privileges in sorted(wanted_defaults.items()):
        kind_name = "TABLES" if objtype == "r" else "SEQUENCES"
        lacking = sorted(privileges - defaults.get((objtype, grantee), set()), key=privilege_order)
        if lacking:
            add(Difference("default_privilege", f"new {kind_name.lower()} created by {migrator}", "missing",
                           f"{grantee} should get {', '.join(lacking)}",
                           (*act_as_migrator, Statement(f"{prefix} GRANT {', '.join(lacking)} ON {kind_name} TO "
                                                        f"{q(grantee)}", "default"))))
    for (objtype, grantee), privileges in sorted(defaults.items()):
        extra = sorted(privileges - wanted_defaults.get((objtype, grantee), set()), key=privilege_order)
        kind_name = {"r": "TABLES", "S": "SEQUENCES", "f": "FUNCTIONS", "T": "TYPES", "n": "SCHEMAS"}.get(objtype,
                                                                                                          objtype)
        if extra and grantee in watched:
            add(Difference("default_privilege", f"new {kind_name.lower()} created by {migrator}", "extra",
                           f"{grantee} would get {', '.join(extra)}",
                           (*act_as_migrator, Statement(f"{prefix} REVOKE {', '.join(extra)} ON {kind_name} FROM "
                                                        f"{grantee_sql(q, grantee)}", "default"))))

    # Login roles: members of their group; the migrator's logins act as the group; cdc logins have REPLICATION.
    for group, members in logins.by_group(names).items():
        for login in sorted(members):
            role = roles[login]
            if group not in role.member_of:
                add(Difference("membership", f"role {login}", "missing", f"not a member of {group}",
                               (Statement(f"GRANT {q(group)} TO {q(login)}", "grant_role"),)))
            if not role.login:
                plan.warnings.append(f"{login} cannot log in (NOLOGIN): a login role is what a URL names.")
            if group == migrator and f"role={migrator}" not in role.settings:
                add(Difference("setting", f"role {login}", "missing", f"its sessions should act as {migrator} "
                               "(so what its migrations create belongs to the group)",
                               (Statement(f"ALTER ROLE {q(login)} SET role = {q(migrator)}", "role_setting"),)))
            if group == cdc and not (role.replication or role.rds_replication or role.superuser):
                add(Difference("attribute", f"role {login}", "missing", "REPLICATION (a role attribute: never "
                               "inherited from the group; RDS/Aurora: GRANT rds_replication TO it instead)",
                               (Statement(f"ALTER ROLE {q(login)} REPLICATION", "replication"),)))
            if group != migrator:
                if role.superuser:
                    plan.warnings.append(f"{login} is a superuser: no grant or revoke limits it.")
                if migrator in role.member_of:
                    add(Difference("membership", f"role {login}", "extra", f"a member of {migrator}: it could "
                                   "skip the audit log and change the schema",
                                   (Statement(f"REVOKE {q(migrator)} FROM {q(login)}", "grant_role"),)))
    return plan


# -- the commands --------------------------------------------------------------------------------------------------

def _open(settings: Settings):
    """Role and privilege changes go to the server itself: the direct URL (the migration role's, usually)."""
    url = direct_url(settings)
    setting = setting_name(settings)
    with translating(url, setting):
        conn = connect(url, settings, application_name=APPLICATION_NAME, autocommit=False)
    return conn, url, setting


def plan_roles(settings: Settings, logins: Logins = Logins()) -> RolesPlan:
    """What differs from the role model (for --check and --dry-run); changes nothing."""
    conn, url, setting = _open(settings)
    try:
        with translating(url, setting):
            plan = compare(conn, settings, logins, database=url.masked)
            conn.rollback()
            return plan
    finally:
        conn.close()


def apply_roles(settings: Settings, logins: Logins = Logins()) -> RolesResult:
    """Make the live roles and grants match the model, in one transaction; then compare again."""
    import psycopg

    conn, url, setting = _open(settings)
    try:
        with translating(url, setting):
            plan = compare(conn, settings, logins, database=url.masked)
            for statement in plan.statements:
                try:
                    conn.execute(statement.sql)
                except psycopg.errors.InsufficientPrivilege as exc:
                    conn.rollback()
                    raise _missing_privilege(conn, statement, exc) from exc
            conn.commit()
            after = compare(conn, settings, logins, database=url.masked)
            conn.rollback()
            return RolesResult(plan, after)
    finally:
        conn.close()


def _missing_privilege(conn, statement: Statement, exc: BaseException) -> DatabaseError:
    user = conn.execute("SELECT current_user").fetchone()[0]
    return DatabaseError(
        f"The server refused `{statement.sql}` to role {user}: {postgres_message(exc)}. Nothing was changed (the "
        "whole --apply is one transaction).",
        f"This step needs {NEEDS[statement.needs]}. Run `celora db roles --apply` as a role that has it (set "
        "DIRECT_DATABASE_URL to it), or run this statement as such a role and --apply again; `celora db roles "
        "--dry-run` prints every statement.",
        sqlstate="42501")


__all__ = ["NEEDS", "Difference", "Logins", "RolesPlan", "RolesResult", "Statement", "apply_roles", "compare",
           "plan_roles"]

