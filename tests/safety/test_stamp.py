"""The guard's reading of every schema's environment stamp (celora_cli.safety.stamp.StampReading): the
strictest stamp wins, an unreadable one counts as production, else the search path's comes first."""

from __future__ import annotations

from celora_cli.safety.stamp import StampReading


def test_production_anywhere_wins_and_is_explained_when_outside_the_search_path():
    reading = StampReading({"app": "production", "public": "development"}, (), ("public",))
    assert reading.environment == "production"
    assert "schema app" in reading.explanation() and "outside this connection's search path" in \
        reading.explanation()


def test_an_unreadable_stamp_counts_as_production():
    reading = StampReading({"public": "development"}, ("secret",), ("public",))
    assert reading.environment == "production"
    assert "schema secret" in reading.explanation() and "may not read it" in reading.explanation()


def test_otherwise_the_search_paths_stamp_then_any_other():
    assert StampReading({"a": "staging", "b": "test"}, (), ("b", "a")).environment == "test"
    assert StampReading({"a": "staging", "b": None}, (), ("b",)).environment == "staging"
    assert StampReading({"b": None}, (), ("b",)).environment is None
    assert StampReading().environment is None
    assert StampReading({"public": "production"}, (), ("public",)).explanation() is None  # the usual case: quiet
