"""The migration domain: the history, status, the runtime (connection, lock, journal), deploy, rollback, reset, resolve
and lint."""
