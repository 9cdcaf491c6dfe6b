"""Models against databases: autogenerate (db migrate), drift, push, the enum types autogenerate misses (enums) and
the generated artifacts (generate)."""
