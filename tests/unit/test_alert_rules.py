"""The alert rules and their runbook: every rule links to a section of docs/runbook.md that exists, and
every alert section of the runbook belongs to a shipped rule.

Anchors follow the GitHub/CommonMark slug of a heading (lower case, punctuation dropped, spaces to "-"),
which is what a rendered docs/runbook.md offers. The rules' behaviour is tested with promtool in
tests/integration/test_prometheus.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "prometheus" / "alerts.yml"
RUNBOOK = ROOT / "docs" / "runbook.md"
RUNBOOK_URL = re.compile(r"^docs/runbook\.md#([a-z0-9_-]+)$")


def _rules() -> list[dict]:
    groups = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def slug(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    text = re.sub(r"[`*_~]", lambda m: "_" if m[0] == "_" else "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _headings(markdown: str) -> list[tuple[int, str]]:
    out, fenced = [], False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (m := re.match(r"^(#{1,6})\s+(.+?)\s*#*\s*$", line)):
            out.append((len(m[1]), m[2]))
    return out


def _anchors() -> set[str]:
    return {slug(text) for _, text in _headings(RUNBOOK.read_text(encoding="utf-8"))}


def test_slug_matches_githubs():
    assert slug("RecsysStageStale") == "recsysstagestale"
    assert slug("Alerts that retrain") == "alerts-that-retrain"
    assert slug("Runbook: recsys alerts") == "runbook-recsys-alerts"


@pytest.mark.parametrize("rule", _rules(), ids=lambda r: r["alert"])
def test_every_rule_links_to_its_runbook_section(rule):
    url = (rule.get("annotations") or {}).get("runbook_url")
    assert url, f"{rule['alert']} has no runbook_url annotation"
    match = RUNBOOK_URL.match(url)
    assert match, f"{rule['alert']}: runbook_url {url!r} is not docs/runbook.md#<anchor>"
    assert match[1] in _anchors(), f"{rule['alert']}: {url} names no heading of docs/runbook.md"
    assert match[1] == slug(rule["alert"]), f"{rule['alert']} links to another alert's section"


def test_every_alert_section_of_the_runbook_is_a_shipped_rule():
    names = {rule["alert"] for rule in _rules()}
    sections = {text for level, text in _headings(RUNBOOK.read_text(encoding="utf-8")) if level == 3}
    assert sections == names, f"runbook only: {sections - names}; rules only: {names - sections}"


def test_runbook_links_inside_the_page_resolve():
    text = RUNBOOK.read_text(encoding="utf-8")
    anchors = _anchors()
    for target in re.findall(r"\]\(#([^)]+)\)", text):
        assert target in anchors, f"docs/runbook.md links to #{target}, which is no heading"
    for path in re.findall(r"\]\((\.\./[^)#]+)", text):
        assert (RUNBOOK.parent / path).resolve().exists(), path


def test_runbook_names_existing_cli_commands():
    """Commands the runbook tells on-call to run exist in the recsys CLI (a typo there costs at 3 am)."""
    from typer.main import get_command

    from recsys.cli import app

    root = get_command(app)
    text = RUNBOOK.read_text(encoding="utf-8")
    used = set(re.findall(r"`recsys ([a-z-]+(?: [a-z-]+)?)", text))
    assert used, "the runbook names no recsys command"
    for words in used:
        command = root
        for part in words.split():
            subcommands = getattr(command, "commands", None)
            if subcommands is None:  # a command: the rest are its arguments
                break
            assert part in subcommands, f"`recsys {words}`: {part!r} is not a recsys command"
            command = subcommands[part]
