"""`celora db roles`, reading the catalog: objects, their owners and ACLs, default privileges and the roles, as the
comparison in ops/roles.py needs them; and names quoted as the server quotes them."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

RELATIONS = """
SELECT c.relname, c.relkind, pg_get_userbyid(c.relowner),
       (SELECT t.relname FROM pg_depend d JOIN pg_class t ON t.oid = d.refobjid
         WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.refclassid = 'pg_class'::regclass
           AND d.deptype IN ('a', 'i') LIMIT 1) AS owned_by,
       coalesce((SELECT array_agg(CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END
                                  || ' ' || a.privilege_type)
                   FROM aclexplode(coalesce(c.relacl,
                                            acldefault(CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END::"char",
                                                       c.relowner))) a
                  WHERE a.grantee <> c.relowner), '{}')
  FROM pg_class c
 WHERE c.relnamespace = %(schema)s::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
   AND NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = 'pg_class'::regclass AND e.objid = c.oid
                                            AND e.deptype = 'e')
 ORDER BY c.relname
"""

OTHER_OBJECTS = """
SELECT 'ROUTINE', p.oid::regprocedure::text, pg_get_userbyid(p.proowner)
  FROM pg_proc p
 WHERE p.pronamespace = %(schema)s::regnamespace
   AND NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = 'pg_proc'::regclass AND e.objid = p.oid
                                            AND e.deptype = 'e')
UNION ALL
SELECT CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, t.oid::regtype::text, pg_get_userbyid(t.typowner)
  FROM pg_type t
 WHERE t.typnamespace = %(schema)s::regnamespace AND t.typtype IN ('e', 'd', 'r', 'c')
   AND (t.typrelid = 0 OR (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')
   AND NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = 'pg_type'::regclass AND e.objid = t.oid
                                            AND e.deptype = 'e')
 ORDER BY 1, 2
"""

SCHEMA_ACL = """
SELECT pg_get_userbyid(n.nspowner),
       coalesce((SELECT array_agg(CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END
                                  || ' ' || a.privilege_type)
                   FROM aclexplode(coalesce(n.nspacl, acldefault('n'::"char", n.nspowner))) a
                  WHERE a.grantee <> n.nspowner), '{}')
  FROM pg_namespace n WHERE n.oid = %(schema)s::regnamespace
"""

DEFAULT_ACL = """
SELECT d.defaclobjtype, CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END, a.privilege_type
  FROM pg_default_acl d, aclexplode(d.defaclacl) a
 WHERE d.defaclrole = (SELECT oid FROM pg_roles WHERE rolname = %(migrator)s)
   AND d.defaclnamespace = %(schema)s::regnamespace
"""

ROLES = """
SELECT r.rolname, r.rolcanlogin, r.rolreplication, r.rolsuper,
       coalesce((SELECT array_agg(g.rolname) FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
                  WHERE m.member = r.oid), '{}'),
       coalesce((SELECT s.setconfig FROM pg_db_role_setting s
                  WHERE s.setrole = r.oid AND s.setdatabase = 0), '{}'),
       EXISTS (SELECT FROM pg_roles x WHERE x.rolname = 'rds_replication' AND pg_has_role(r.oid, x.oid, 'MEMBER'))
  FROM pg_roles r WHERE r.rolname = ANY(%(names)s)
"""


@dataclass(frozen=True)
class Role:
    login: bool
    replication: bool
    superuser: bool
    member_of: frozenset[str]
    settings: tuple[str, ...]
    rds_replication: bool


def read_roles(conn, names: Iterable[str]) -> dict[str, Role]:
    return {row[0]: Role(row[1], row[2], row[3], frozenset(row[4]), tuple(row[5]), row[6])
            for row in conn.execute(ROLES, {"names": sorted(names)})}


# Table names that must be quoted though they look plain (the quoter asks the server about role names only).
_RESERVED = {"user", "order", "group", "table", "select", "where", "from", "all", "analyse", "analyze", "and",
             "any", "array", "as", "asc", "case", "check", "column", "constraint", "create", "default", "desc",
             "distinct", "do", "else", "end", "for", "foreign", "grant", "having", "in", "into", "limit", "not",
             "null", "offset", "on", "only", "or", "primary", "references", "returning", "some", "then", "to",
             "union", "unique", "using", "when", "window", "with"}

_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER", "MAINTAIN", "USAGE",
               "CREATE")


def privilege_order(privilege: str) -> int:
    return _PRIVILEGES.index(privilege) if privilege in _PRIVILEGES else len(_PRIVILEGES)


def grant_map(acl: list[str]) -> dict[str, set[str]]:
    granted: dict[str, set[str]] = {}
    for item in acl:
        grantee, _, privilege = item.rpartition(" ")
        granted.setdefault(grantee, set()).add(privilege)
    return granted


def quoter(conn, names: set[str]):
    """quote_ident as the server does it (keywords included), for every name the statements use."""
    quoted = dict(conn.execute("SELECT n, quote_ident(n) FROM unnest(%s::text[]) n", (sorted(names),)).fetchall())

    def q(name: str) -> str:
        if name in quoted:
            return quoted[name]
        if re.fullmatch(r"[a-z_][a-z0-9_]*", name) and name not in _RESERVED:  # a table or sequence name
            return name
        return '"' + name.replace('"', '""') + '"'

    return q


def grantee_sql(q, grantee: str) -> str:
    return "PUBLIC" if grantee == "PUBLIC" else q(grantee)
