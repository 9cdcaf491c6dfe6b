"""Models against databases: autogenerate (db migrate), drift, push, the enum types autogenerate misses (enums),
the generated artifacts (generate), and db migrate's helpers: from_drift (a drift written as a migration), renames
(renames that keep data, the data a revision would lose), shadow_server (the local PostgreSQL as the shadow's
server when the development server refuses CREATE DATABASE)."""
