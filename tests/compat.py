"""The compatibility subset: the tests `make test-compat` runs against each PostgreSQL major version (14-18).

`CELORA_TEST_PG_BIN=DIR make test-compat` (or `make test-compat PG=16`, which finds DIR with .ci/pg-bin) starts the
session's cluster from the server binaries in DIR, PgBouncer in front as always, and runs only the tests marked
`compat`. They are chosen here, in one list, rather than by decorators spread over the suite: a test's module
says what it checks, this file says which checks must hold on every supported server. Each one exercises a
command end to end against the server (migrate-deploy, rollback, status and drift, push, seed with fixtures and a
small volume, health in depth, backup and restore, the audit log, `db changes`, `db lint`, a studio read), and
the whole subset stays within a few minutes per major on 2 cores.

A name here that no longer exists in its (collected) module is a collection error, so a renamed test cannot
silently leave the subset. Tests may also carry `@pytest.mark.compat` themselves (tests/ops/
test_backup_versions.py does).
"""

from __future__ import annotations

from pathlib import Path

import pytest

SUBSET: dict[str, tuple[str, ...]] = {
    "tests/migrate/test_deploy.py": (
        "test_deploy_creates_every_table_and_records_head",
        "test_cli_reports_each_migration_then_nothing_pending",
        "test_models_and_migrations_agree",
        "test_failed_migration_is_named_and_database_stays_at_last_good",
        "test_deploy_uses_the_direct_url_next_to_pgbouncer",
    ),
    "tests/migrate/test_reset_rollback.py": (
        "test_rollback_one_step_then_deploy_round_trips",
        "test_rollback_to_a_revision_by_id_or_file_name_and_to_base",
        "test_reset_drops_everything_reapplies_and_keeps_the_schema_itself",
    ),
    "tests/migrate/test_status_drift.py": ("test_status_drift",),
    # pg_dump's output differs between server versions: the squash must apply on each
    "tests/migrate/test_squash.py": ("test_the_whole_history_squashed_deploys_the_same_schema",),
    "tests/migrate/test_plan.py": ("test_volatile_default_on_a_large_table_then_a_blocking_session",),
    # the committed snapshots were built on 18: the gate must find no drift on a matching 14-17 database
    "tests/migrate/test_deploy_gate.py": (
        "test_a_column_added_by_hand_stops_the_deploy_naming_it_and_allow_drift_applies",
        "test_a_matching_database_deploys_and_an_empty_one_has_nothing_to_compare",
    ),
    # (not test_compare_names_a_changed_default...: it needs the citext extension, which the 16 wheel lacks)
    "tests/schema/test_drift.py": ("test_database_drift_is_read_only_and_names_the_difference",),
    # the shadow on the local PostgreSQL (Debian's 15) for a server of another major: the catalogs compare equal
    "tests/schema/test_shadow_fallback.py": (
        "test_without_createdb_the_local_server_holds_the_shadow_and_drift_is_still_found",),
    "tests/schema/test_push.py": (
        "test_a_new_column_is_pushed_then_in_sync_and_alembic_version_untouched",
        "test_the_real_models_onto_an_empty_database",
        "test_dropping_a_column_with_data_needs_the_flag",
    ),
    # the catalog comparison that adopts a database, and the CI gate that sees enum labels
    "tests/schema/test_baseline.py": ("test_a_create_all_database_is_adopted_at_head_and_then_up_to_date",),
    "tests/schema/test_check.py": ("test_an_added_enum_label_fails_the_check_until_db_migrate_writes_it",),
    "tests/data/test_seed.py": (
        "test_first_run_creates_everything_second_changes_nothing",
        "test_cli_volume_after_fixtures",  # 3 generated users
    ),
    "tests/ops/test_health.py": ("test_healthy_through_pgbouncer_and_direct",),
    "tests/ops/test_health_depth.py": (
        "test_a_client_waiting_in_pgbouncer_is_degraded_and_names_the_pool",
        "test_a_session_blocked_on_a_lock_is_degraded_and_names_the_blocker",
        "test_an_old_transaction_is_degraded_and_named",
    ),
    "tests/ops/test_backup.py": (
        "test_backup_writes_the_dump_and_a_manifest_of_the_snapshot",
        "test_restore_verify_round_trips_with_identical_tables_and_counts",
        "test_restore_replaces_the_database_and_leaves_nothing_of_it_behind",
    ),
    "tests/data/test_audit.py": (
        "test_a_label_change_records_one_row_with_actor_and_old_new_and_db_audit_shows_it",
        "test_every_column_the_models_mark_sensitive_is_excluded_by_the_triggers",
        "test_prune_deletes_old_entries_in_batches_after_confirmation",
    ),
    # (not test_setup_only_makes_what_debezium_needs...: it reads pg_publication_tables.attnames, new in 15)
    "tests/data/test_changes.py": (
        "test_secrets_never_reach_the_stream_and_old_values_come_with_deletes",
        "test_from_start_prints_the_rows_that_existed_before_the_slot_then_only_new_changes",
    ),
    "tests/migrate/test_lint.py": (
        "test_the_projects_own_history_passes",
        "test_migrate_deploy_with_lint_applies_nothing_when_a_pending_migration_has_findings",
    ),
    "tests/data/test_studio_http.py": (
        "test_home_lists_every_model_with_its_row_count",
        "test_related_records_both_ways",
        "test_read_only_transactions_refuse_writes_in_postgresql_too",
    ),
    # Keyset SQL (row values, NULL placement) and the EXPLAIN (FORMAT JSON) shapes the explanation reads.
    "tests/data/test_studio_paging.py": (
        "test_next_and_previous_walk_every_row_once_in_sql_order",
        "test_a_slow_page_explains_itself_and_the_index_it_names_cures_it",
    ),
}

ROOT = Path(__file__).resolve().parent.parent


@pytest.hookimpl(tryfirst=True)  # before -m selects by marker
def pytest_collection_modifyitems(config, items) -> None:
    collected: dict[str, set[str]] = {}
    for item in items:
        path = Path(str(item.fspath)).resolve()
        if not path.is_relative_to(ROOT):
            continue
        module = path.relative_to(ROOT).as_posix()
        name = getattr(item, "originalname", None) or item.name
        collected.setdefault(module, set()).add(name)
        if name in SUBSET.get(module, ()):
            item.add_marker(pytest.mark.compat)
    missing = [f"{module}::{name}" for module, names in SUBSET.items() if module in collected
               for name in names if name not in collected[module]]
    narrowed = config.getoption("keyword") or config.getoption("deselect") or any("::" in arg for arg in config.args)
    if missing and not narrowed:
        raise pytest.UsageError(f"tests/compat.py names tests that do not exist: {', '.join(missing)}")
