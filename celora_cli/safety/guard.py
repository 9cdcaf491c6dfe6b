"""The one guard for destructive actions (reset, rollback, push with data loss, the seed, later restore).

The decision, in this order:
1. Production (the database's stamp in celora_metadata says so, or CELORA_ENV does): refused (exit 12) unless
   the loudly named override flag (`--allow-production`) was given. The refusal says how it was determined.
2. The force flag (`--force`): proceed.
3. Interactive (stdin is a terminal and no CI variable): a Rich confirmation naming the target and what will
   be lost; anything but yes is a refusal.
4. Otherwise: refused, naming the flag that would proceed. Nothing ever waits for input in CI.

The guard decides before anything is changed; the caller acts only when it returns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from celora_cli.config.settings import Settings
from celora_cli.errors import Refused
from celora_cli.safety.interaction import ci_is_set, is_interactive
from celora_cli.safety.production import OVERRIDE_FLAG, PRODUCTION
from celora_cli.safety.stamp import ENVIRONMENT_KEY, METADATA_TABLE

FORCE_FLAG = "--force"

# ask(question) -> True to proceed. The question is plain text (no markup).
Ask = Callable[[str], bool]


@dataclass(frozen=True)
class ProductionVerdict:
    production: bool
    reason: str  # how it was determined, for the refusal and the prompt


def production_verdict(settings_env: str, database_env: str | None) -> ProductionVerdict:
    stamp = f"{METADATA_TABLE}.{ENVIRONMENT_KEY}, written by migrate-deploy"
    if database_env == PRODUCTION:
        also = " and CELORA_ENV is 'production'" if settings_env == PRODUCTION else ""
        return ProductionVerdict(True, f"the database is stamped '{PRODUCTION}' ({stamp}){also}")
    if settings_env == PRODUCTION:
        stamped = f"stamped '{database_env}'" if database_env else "not stamped"
        return ProductionVerdict(True, f"CELORA_ENV is 'production' (the database itself is {stamped})")
    stamped = f"stamped '{database_env}' ({stamp})" if database_env else "not stamped with an environment"
    return ProductionVerdict(False, f"the database is {stamped} and CELORA_ENV is '{settings_env}'")


def confirm_destructive(
    action: str,
    *,
    target: str,
    losses: Sequence[str],
    force_flag: str = FORCE_FLAG,
    forced: bool,
    settings: Settings,
    database_env: str | None,
    production_override: bool,
    override_flag: str = OVERRIDE_FLAG,
    command: str | None = None,
    ask: Ask | None = None,
    interactive: Callable[[], bool] | None = None,
) -> None:
    """Return to proceed; raise Refused (exit 12) otherwise. Nothing is changed either way.

    action: what will happen, e.g. "drop every object in the schema and re-apply all migrations".
    target: the masked URL. losses: what will be lost, e.g. "users (2 rows)".
    command: the command line to repeat in the hint, e.g. "celora db reset" (flags are appended).
    """
    command = command or "the command again"
    verdict = production_verdict(settings.env, database_env)
    if verdict.production and not production_override:
        raise Refused(
            f"Refused to {action} on {target}: it is a production database ({verdict.reason}). Nothing was changed.",
            f"Check DATABASE_URL / DIRECT_DATABASE_URL point where you mean. If you really mean production, "
            f"run `{command} {override_flag}` (adding {force_flag} when not at a terminal).",
        )
    if forced:
        return
    # The core never prompts: only a caller that can ask (the CLI passes output.confirm) gets a question.
    if ask is None or not (interactive or is_interactive)():
        raise Refused(
            f"Refused to {action} on {target} without confirmation: celora cannot ask here (stdin is not a "
            f"terminal, or CI is set). Nothing was changed.",
            f"Run `{command} {force_flag}` to proceed without a prompt.",
        )
    question = _question(action, target, losses, verdict)
    if not ask(question):
        raise Refused(f"Nothing was changed: '{action}' on {target} was not confirmed.",
                      f"Run `{command}` again and answer y, or pass {force_flag}.")


def _question(action: str, target: str, losses: Sequence[str], verdict: ProductionVerdict) -> str:
    lines = [f"This will {action} on {target}."]
    if verdict.production:
        lines.append(f"THIS IS A PRODUCTION DATABASE ({verdict.reason}).")
    if losses:
        lines.append("What will be lost:")
        lines.extend(f"  - {loss}" for loss in losses)
    else:
        lines.append("Nothing that holds data will be lost.")
    lines.append("Proceed?")
    return "\n".join(lines)


# ci_is_set, is_interactive, OVERRIDE_FLAG and PRODUCTION are re-exported: the guard is where callers look for them.
__all__ = ["FORCE_FLAG", "OVERRIDE_FLAG", "PRODUCTION", "ProductionVerdict", "ci_is_set", "confirm_destructive",
           "is_interactive", "production_verdict"]
