"""Issue 18, point 2: personal data in any declared field is quarantined, and never reaches a report.

Values that look like e-mail addresses, phone numbers or IP addresses are caught whatever the column;
every text field has a pattern and a length limit; the validation reports and GX Data Docs under
``reports/`` name rules and counts, never the rejected values (those stay in the encrypted quarantine).
"""

from __future__ import annotations

import pandas as pd
import pytest
from hostile import event, jsonl, land, reasons, run_stages, zone

from recsys.data import formats

HUGE = "x" * 2_000_000


@pytest.mark.parametrize(
    ("value", "kinds"),
    [
        ("bob@example.org", {"email"}),
        ("contact: alice.smith+tag@mail.example.co.uk", {"email"}),
        ("+49 151 1234567", {"phone"}),
        ("+4915112345678", {"phone"}),
        ("(555) 123-4567", {"phone"}),
        ("555.123.4567", {"phone"}),
        ("192.168.1.20", {"ip"}),
        ("host 10.0.0.1 said", {"ip"}),
        ("2001:db8::1", {"ip"}),
        ("fe80::1ff:fe23:4567:890a", {"ip"}),
    ],
)
def test_personal_values_are_detected(value, kinds):
    assert formats.kinds_of_personal(value) == kinds


@pytest.mark.parametrize(
    "value",
    [
        "e20260101-00000042",
        "s20260101-0000000-885099293",
        "u001000001",
        "NA-US-NY",
        "2026-01-01.002",
        "ios",
        "EU-DE-BE",
        "1.2.3",
        "v2.10.1",
        "12:30:45",
        "goal match highlights top",
        "Toy Story (1995)",
    ],
)
def test_ordinary_values_are_not_personal(value):
    assert formats.kinds_of_personal(value) == set()


def test_every_text_field_of_the_raw_schemas_has_a_format_rule():
    from recsys.data.schema import RAW_EVENTS, RAW_USERS, VIDEOS

    text = {c for s in (RAW_EVENTS, RAW_USERS, VIDEOS) for c, t in s.items() if t == "string"}
    assert text <= set(formats.FORMATS)
    assert all(limit <= formats.MAX_BYTES for _, limit in formats.FORMATS.values())


PLANTED = {
    "rec_version": "bob@example.org",
    "device": "alice@example.org",
    "region": "+49 151 1234567",
    "event_id": "192.168.7.77",
    "session_id": "carol@example.net",
    "user_id": "dave@example.com",
}


def test_personal_data_in_any_field_is_quarantined_and_kept_out_of_reports(settings):
    rows = [event(i) for i in range(40)]
    rows += [event(100 + i, **{col: value}) for i, (col, value) in enumerate(PLANTED.items())]
    rows += [event(200, title=None, rec_version=HUGE), event(201, region="EU-DE-BE-Berlin-Mitte-Street-12")]
    land(settings.data_dir, jsonl(rows))
    out = run_stages(settings)
    assert out["validate"]["accepted_rows"] == 40
    got = reasons(settings)
    for col in PLANTED:
        assert any(f"pii_in_{col}" in r.split(";") for r in got), (col, got)
    assert "bad_format_rec_version" in got and "bad_format_region" in got

    clean = zone(settings, "clean", "interactions")
    flat = [str(x) for x in clean.to_numpy().ravel()]
    assert not any(v in x for v in PLANTED.values() for x in flat)

    reports = [p for p in (settings.data_dir / "reports").rglob("*") if p.is_file()]
    assert reports, "validation wrote no report"
    total = sum(p.stat().st_size for p in reports)
    assert total < 5_000_000, f"reports hold {total} bytes: a rejected value was copied into them"
    for p in reports:
        data = p.read_bytes()
        for value in [*PLANTED.values(), HUGE[:1000]]:
            assert value.encode() not in data, (p, value)


def test_reference_files_with_personal_data_stop_the_day_naming_file_line_and_rule(settings):
    from hostile import users

    from recsys.data.sources import LandingError

    people = users()
    people[2]["region"] = "eve@example.org"
    land(settings.data_dir, jsonl([event(0)]), user_rows=people)
    with pytest.raises(LandingError) as err:
        run_stages(settings, names=("collect",))
    msg = str(err.value)
    assert "users/ds=2026-01-01/part-0.jsonl line 3: column 'region' fails pii_in_region" in msg
    assert "eve@example.org" not in msg


def test_format_rules_accept_what_the_sources_produce(settings):
    from datetime import date

    from recsys.config import load_settings
    from recsys.sim import simulate as sim
    from recsys.sim.world import build_world

    world = build_world(load_settings().simulator, 7)
    events = sim.simulate_day(world, date(2026, 1, 1), None, None)
    for col in ("event_id", "user_id", "email", "ip", "device", "region", "session_id"):
        assert formats.format_ok(col, events[col]).all(), col
        assert not formats.looks_personal(col, events[col]).any(), col
    for col in ("user_id", "email", "region", "device", "age_band", "gender", "activity"):
        assert formats.format_ok(col, world.users[col]).all(), col
    catalog = sim.catalog_on(world, date(2026, 1, 1))
    for col in ("category", "tags", "title"):
        assert (
            formats.format_ok(col, catalog[col]).all() and not formats.looks_personal(col, catalog[col]).any()
        )
    assert isinstance(catalog, pd.DataFrame)
