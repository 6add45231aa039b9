"""``recsys run``: the stage is a choice list and ``--ds`` a typed date, both checked before any work."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from recsys import stages
from recsys.cli import STAGES, Stage, app


@pytest.fixture()
def runner():
    return CliRunner()


def test_every_choice_is_a_stage_function():
    assert set(STAGES) == {s.value for s in Stage}
    for name in STAGES:
        assert callable(getattr(stages, name)), name


def test_help_lists_the_stage_choices_and_the_date_format(runner):
    out = runner.invoke(app, ["run", "--help"], env={"COLUMNS": "240"}).output
    print(out)
    assert "land|simulate|collect|validate" in out and "YYYY-MM-DD" in out


@pytest.mark.parametrize("ds", ["2026-13-01", "yesterday", "2026/01/03"])
def test_a_bad_date_is_refused_before_the_stage_runs(runner, ds):
    """The parser refuses it as a domain error, which ``recsys.cli.main`` prints as one line and exit 1
    (tests/unit/test_cli_errors.py runs that entry point)."""
    from recsys.errors import RecsysError

    res = runner.invoke(app, ["run", "collect", "--ds", ds])
    assert res.exit_code != 0
    assert isinstance(res.exception, RecsysError)
    assert f"bad date {ds!r}: expected YYYY-MM-DD" in str(res.exception)


def test_an_unknown_stage_is_a_usage_error(runner):
    res = runner.invoke(app, ["run", "collectt", "--ds", "2026-01-03"])
    assert res.exit_code == 2
    assert "collectt" in res.output and "land" in res.output  # names the bad value and the choices


def test_a_good_date_reaches_the_stage_as_a_date(runner, tmp_path, monkeypatch):
    """should_train on an empty data dir: the stage runs for the parsed day and answers (no champion)."""
    monkeypatch.setenv("RECSYS_DATA_DIR", str(tmp_path))
    res = runner.invoke(app, ["run", "should_train", "--ds", "2026-01-03"])
    assert res.exit_code == 0, res.output
    assert '"train": true' in res.output
    assert any(tmp_path.rglob("*2026-01-03*"))  # the run record of the parsed day
