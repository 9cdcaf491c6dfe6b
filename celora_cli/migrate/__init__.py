"""The migration domain. Leaves first: the history (history, scripts, revision_ids), status (current vs head, the one
implementation), the runtime's parts (connection, lock, ddl_lock, journal, recorder; runtime is env.py's body), the
one step driver (steps), and the commands built on them: deploy, rollback, reset, resolve, lint."""
