"""Bad MovieLens input stops with the file and line (unparsable line, rating out of range); the rest
(unknown item, gaps) is covered end to end in tests/integration/test_backfill.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from recsys.data import movielens

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "movielens" / "ml-100k"


@pytest.fixture()
def folder(tmp_path):
    out = tmp_path / "ml-100k"
    shutil.copytree(FIXTURE, out)
    return out


def _append(folder: Path, line: str) -> int:
    path = folder / "u.data"
    text = path.read_text()
    path.write_text(text + line + "\n")
    return text.count("\n") + 1  # the appended line's number


@pytest.mark.parametrize(
    "line,message",
    [
        ("1\tabc\t4\t874958400", "unparsable rating line"),
        ("1\t2\t\t874958400", "unparsable rating line"),
        ("1\t6\t7\t874958400", "rating 7 outside MovieLens' scale"),
        ("1\t6\t0\t874958400", "rating 0 outside MovieLens' scale"),
    ],
)
def test_bad_line_names_file_and_line(folder, line, message):
    n = _append(folder, line)
    with pytest.raises(ValueError, match=message) as err:
        movielens.load(folder)
    assert f"{folder / 'u.data'}:{n}:" in str(err.value)


def test_line_with_extra_fields_names_the_file(folder):
    n = _append(folder, "1\t6\t4\t874958400\t99")
    with pytest.raises(ValueError, match="u.data") as err:
        movielens.load(folder)
    assert f"line {n}" in str(err.value)


def test_good_file_still_loads(folder):
    assert len(movielens.load(folder).ratings) == 9
