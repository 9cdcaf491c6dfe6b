"""`celora db changes`: every committed change to the app tables as JSON lines, from PostgreSQL's logical decoding.

Output plugin: pgoutput, streamed over the replication protocol (START_REPLICATION ... LOGICAL, psycopg2's
LogicalReplicationConnection) on the direct connection. One module per job:

- connection: the direct session (never through PgBouncer), the server's prerequisites, the tables streamed;
- publication: what a publication sends, checked column by column, and creating it (secret columns left out);
- slots: creating a slot when missing (temporary for a one-shot run), listing and dropping them;
- pgoutput: the binary protocol decoded into changes and commits;
- replication: the walsender session (start, read, confirm) and its errors;
- streaming: read, write, flush, then confirm (at least once, never a skipped change); a follower's reconnects;
- configure: `--setup-only`, the publication and slot for celora or Debezium, with the role and connector settings.
"""

from __future__ import annotations

from celora_cli.data.changes.configure import SetupResult, role_hint, setup
from celora_cli.data.changes.connection import DEFAULT_SLOT, PLUGIN, check_prerequisites, check_slot_name
from celora_cli.data.changes.pgoutput import Commit, Decoder
from celora_cli.data.changes.publication import COLUMN_LISTS_LIMITS, PublicationCheck, publication_check
from celora_cli.data.changes.slots import DropPlan, SlotInfo, drop_slot, list_slots
from celora_cli.data.changes.streaming import StreamResult, stream

__all__ = ["COLUMN_LISTS_LIMITS", "DEFAULT_SLOT", "PLUGIN", "Commit", "Decoder", "DropPlan", "PublicationCheck",
           "SetupResult", "SlotInfo", "StreamResult", "check_prerequisites", "check_slot_name", "drop_slot",
           "list_slots", "publication_check", "role_hint", "setup", "stream"]
