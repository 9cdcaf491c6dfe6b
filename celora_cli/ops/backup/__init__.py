"""Verified backups: `celora db backup` (pg_dump + manifest) and `celora db restore` (check, restore, compare)."""

from celora_cli.ops.backup.dump import BackupResult, backup
from celora_cli.ops.backup.manifest import BackupIncompatible, BackupInvalid, Manifest, load_checked
from celora_cli.ops.backup.restore import RestorePlan, RestoreResult, VerifyResult, restore, verify_backup

__all__ = ["BackupIncompatible", "BackupInvalid", "BackupResult", "Manifest", "RestorePlan", "RestoreResult",
           "VerifyResult", "backup", "load_checked", "restore", "verify_backup"]
