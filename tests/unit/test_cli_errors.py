"""Issue 18: an operator's mistake on the ``recsys`` command is one clear line and a non-zero exit.

Each case runs the real entry point (``recsys.cli:main``, what the console script calls) on a fresh,
empty data dir and checks stderr: one line naming the problem, no traceback.
"""

from __future__ import annotations

import sys

import pytest


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    from recsys.cli import main

    monkeypatch.setattr(sys, "argv", ["recsys", *args])
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    return exit_.value.code, err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("recommend", "u0001"), "nothing is published yet"),
        (("publish", "rollback"), "nothing has been published"),
        (("run", "evaluate", "--ds", "2026-01-01"), "recsys run evaluate needs --run-id"),
        (("run", "register", "--ds", "2026-01-01"), "recsys run register needs --run-id"),
        (("model", "rollback"), "no 'previous' model to roll back to"),
        (("run", "collect", "--ds", "2026-13-01"), "bad date '2026-13-01': expected YYYY-MM-DD"),
        (("run", "collect", "--ds", "2026-01-01"), "nothing landed for events on ds=2026-01-01"),
    ],
)
def test_domain_errors_are_one_line_without_traceback(settings, monkeypatch, capsys, args, message):
    code, err = run_cli(monkeypatch, capsys, *args)
    (line,) = [x for x in err.splitlines() if x.startswith("recsys: error: ")]  # (log lines aside)
    assert code == 1 and message in line
    assert "Traceback" not in err and 'File "' not in err


def test_a_missing_key_is_a_domain_error(settings, monkeypatch, capsys):
    monkeypatch.delenv("RECSYS_PRIVACY__PSEUDONYM_KEY")
    code, err = run_cli(monkeypatch, capsys, "recommend", "u0001")
    assert code == 1 and "no pseudonym key" in err and "Traceback" not in err


def test_a_bug_keeps_its_traceback(settings, monkeypatch, capsys):
    from recsys import cli

    def broken(*_a, **_k):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr("recsys.serving.get_recommendations", broken)
    monkeypatch.setattr(sys, "argv", ["recsys", "recommend", "u1"])
    with pytest.raises(ZeroDivisionError):
        cli.main()
