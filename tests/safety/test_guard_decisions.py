"""The guard's decision table (celora_cli.safety.guard.confirm_destructive), with the prompt and the terminal
injected."""

from __future__ import annotations

import pytest

from celora_cli.config.settings import load_settings
from celora_cli.errors import ExitCode, Refused
from celora_cli.safety.guard import ci_is_set, confirm_destructive, production_verdict


def settings(env: str = "development"):
    return load_settings(environ={"CELORA_ENV": env, "DATABASE_URL": "postgresql://u:pw@db:5432/app"})


class Prompt:
    def __init__(self, answer: bool) -> None:
        self.answer = answer
        self.questions: list[str] = []

    def __call__(self, question: str) -> bool:
        self.questions.append(question)
        return self.answer


def decide(*, env="development", stamp=None, forced=False, override=False, terminal=False, answer=True):
    prompt = Prompt(answer)
    confirm_destructive(
        "reset the database", target="postgresql://u:****@db:5432/app", losses=["users (2 rows)"],
        forced=forced, settings=settings(env), database_env=stamp, production_override=override,
        command="celora db reset", ask=prompt, interactive=lambda: terminal)
    return prompt


def refusal(**kwargs) -> Refused:
    with pytest.raises(Refused) as caught:
        decide(**kwargs)
    assert caught.value.exit_code == ExitCode.REFUSED == 12
    return caught.value


def test_not_interactive_and_not_forced_is_refused_naming_the_flag():
    error = refusal(terminal=False)
    assert "cannot ask here" in error.message and "Nothing was changed" in error.message
    assert "celora db reset --force" in error.hint


def test_forced_proceeds_without_asking():
    assert decide(forced=True, terminal=True).questions == []


def test_interactive_asks_naming_target_and_losses_and_proceeds_on_yes():
    prompt = decide(terminal=True, answer=True)
    [question] = prompt.questions
    assert "postgresql://u:****@db:5432/app" in question and "users (2 rows)" in question
    assert "pw" not in question


def test_interactive_no_is_a_refusal():
    error = refusal(terminal=True, answer=False)
    assert "not confirmed" in error.message


@pytest.mark.parametrize("terminal", [False, True])
def test_production_stamp_refused_even_forced_and_says_how_it_was_determined(terminal):
    error = refusal(stamp="production", forced=True, terminal=terminal)
    assert "stamped 'production'" in error.message and "celora_metadata.environment" in error.message
    assert "--allow-production" in error.hint


def test_production_celora_env_refused_even_when_the_database_says_otherwise():
    error = refusal(env="production", stamp="development", forced=True)
    assert "CELORA_ENV is 'production'" in error.message and "stamped 'development'" in error.message


def test_override_with_force_proceeds_on_production():
    assert decide(stamp="production", forced=True, override=True).questions == []


def test_override_alone_still_needs_confirmation():
    error = refusal(stamp="production", override=True, terminal=False)
    assert "--force" in error.hint
    prompt = decide(stamp="production", override=True, terminal=True, answer=True)
    assert "PRODUCTION DATABASE" in prompt.questions[0]


def test_non_production_stamp_does_not_protect():
    assert decide(stamp="staging", forced=True).questions == []
    assert not production_verdict("development", "staging").production
    assert "not stamped" in production_verdict("development", None).reason


@pytest.mark.parametrize(("value", "expected"), [("", False), ("0", False), ("false", False), ("true", True),
                                                 ("1", True), ("yes", True)])
def test_ci_variable(value, expected):
    assert ci_is_set({"CI": value}) is expected
