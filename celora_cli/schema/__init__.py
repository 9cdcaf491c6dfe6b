"""Models against databases: autogenerate (db migrate), drift, push and the generated artifacts."""
