"""Issue 15 (bounded memory): the collect stage parses and writes the events in chunks of lines.

Whatever the chunk size, collect gives the frames the whole file gives (same rows, order, columns and
types; the same malformed lines with the same rules and line numbers; the same counts), seals exactly
the bytes it read, and a failure leaves no raw partition and no staged file. The streamed encryption
reads and writes the same format as ``Fernet``.
"""

from __future__ import annotations

import io
import os

import pandas as pd
import pytest
from hostile import DS, event, hostile_day, jsonl, land, landing_dir, users, videos

from recsys.data import collect
from recsys.data.lake import Lake
from recsys.data.sources import parse_jsonl


def lake_of(settings) -> Lake:
    from recsys.stages import open_lake

    return open_lake(settings)


def collected(settings, data: bytes, chunk_rows: int) -> tuple[dict, dict[str, pd.DataFrame], bytes]:
    path = land(settings.data_dir, data)
    lake = lake_of(settings)
    summary = collect.collect_day(lake, DS, chunk_rows)
    frames = {d: lake.read_frame("raw", d, DS) for d in ("events", "events_malformed", "videos", "users")}
    assert not path.exists()
    sealed = lake.cipher.decrypt(path.with_name("part-0.jsonl.enc").read_bytes())
    return summary, frames, sealed


@pytest.mark.parametrize("chunk_rows", [1, 7, 50])
def test_chunked_collect_gives_the_frames_of_the_whole_file(settings, chunk_rows):
    data = hostile_day()
    whole_events, whole_malformed = parse_jsonl(data, source=str(landing_dir(settings.data_dir, "events")))
    one_summary, one, one_sealed = collected(settings, data, 10**9)  # a single chunk
    summary, frames, sealed = collected(settings, data, chunk_rows)
    assert sealed == one_sealed == data  # what was read is what was sealed, byte for byte
    assert summary == one_summary
    for name, frame in one.items():
        pd.testing.assert_frame_equal(frames[name], frame, check_exact=True)
    # the single chunk is the whole-file parse (the path before chunking)
    pd.testing.assert_frame_equal(one["events"], whole_events, check_exact=True)
    assert list(one["events"].columns)[-1] == "late_key" and one["events"]["late_key"].count() == 1
    src = str(landing_dir(settings.data_dir, "events") / "part-0.jsonl")
    pd.testing.assert_frame_equal(
        one["events_malformed"], whole_malformed.assign(source=src).astype({"source": "string"})
    )
    assert summary["input_rows"] == len(whole_events) + len(whole_malformed)
    assert summary["malformed_rows"] == len(whole_malformed) > 3
    assert set(frames["events_malformed"]["reason"]) >= {"bad_encoding", "malformed_json", "not_json_object"}


def test_a_second_collect_reads_the_sealed_copy_in_chunks(settings):
    data = hostile_day()
    _, first, _ = collected(settings, data, 7)
    lake = lake_of(settings)
    again = collect.collect_day(lake, DS, 5)  # landing is sealed now: read back through the cipher
    assert again["input_rows"] == len(first["events"]) + len(first["events_malformed"])
    events = lake.read_frame("raw", "events", DS)
    pd.testing.assert_frame_equal(events, first["events"])
    src = first["events_malformed"]["source"].iloc[0]
    assert lake.read_frame("raw", "events_malformed", DS)["source"].iloc[0] == src + ".enc"


@pytest.mark.parametrize("data", [b"", b"\xef\xbb", b"\xef\xbb\xbf", b"\n\n", b"[1]\n"])
def test_a_day_without_events_gives_the_empty_frames(settings, data):
    summary, frames, sealed = collected(settings, data, 2)
    assert sealed == data
    whole, malformed = parse_jsonl(data)
    pd.testing.assert_frame_equal(frames["events"], whole)
    assert len(frames["events_malformed"]) == len(malformed) == summary["malformed_rows"]


def test_lines_are_split_as_the_whole_file_is():
    data = b"\xef\xbb\xbfa\nb\r\n\nc\xe2\x80\xa8d\n\xef\xbb\xbfe"
    whole = list(enumerate(data.removeprefix(b"\xef\xbb\xbf").split(b"\n"), start=1))
    for size in (1, 2, 3, 5, len(data)):
        blocks = [data[i : i + size] for i in range(0, len(data), size)]
        assert list(collect.numbered_lines(blocks)) == whole


def test_a_failed_collect_leaves_no_raw_partition_and_no_staged_file(settings, monkeypatch):
    path = land(settings.data_dir, jsonl([event(i) for i in range(30)]))
    original = collect._in_columns  # each parsed chunk on its way to the staged file
    calls = []

    def fail_on_third_chunk(*args):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")
        return original(*args)

    monkeypatch.setattr(collect, "_in_columns", fail_on_third_chunk)
    with pytest.raises(OSError, match="disk full"):
        collect.collect_day(lake_of(settings), DS, 4)
    raw = settings.data_dir / "raw"
    assert not [p for p in raw.rglob("*") if p.is_file()]  # nothing committed, nothing staged
    leftovers = [p.name for p in path.parent.iterdir()]
    assert leftovers == ["part-0.jsonl"]  # the landing file is untouched, no sealed copy
    monkeypatch.setattr(collect, "_in_columns", original)
    assert collect.collect_day(lake_of(settings), DS, 4)["input_rows"] == 30


def test_streamed_encryption_is_fernet_both_ways():
    from cryptography.fernet import Fernet

    from recsys.privacy.crypto import Cipher, DecryptionError

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    cipher = Cipher([new, old])
    data = os.urandom(3 * (1 << 20) + 5)
    sink = io.BytesIO()
    w = cipher.writer(sink)
    for i in range(0, len(data), 100_001):
        w.write(data[i : i + 100_001])
    w.finish()
    assert cipher.decrypt(sink.getvalue()) == data  # the whole-file reader reads the streamed file
    assert Cipher([new]).decrypt(sink.getvalue()) == data  # written under the newest key
    blob = Cipher([old]).encrypt(data)  # a file written whole, under a rotated-out key
    assert b"".join(cipher.decrypt_file(io.BytesIO(blob))) == data
    for bad in (blob[:-10], blob[:100] + bytes([blob[100] ^ 1]) + blob[101:], b"plain"):
        with pytest.raises(DecryptionError):
            b"".join(cipher.decrypt_file(io.BytesIO(bad)))
    with pytest.raises(DecryptionError):
        b"".join(Cipher([Fernet.generate_key().decode()]).decrypt_file(io.BytesIO(blob)))
    aborted = io.BytesIO()
    w = cipher.writer(aborted)
    w.write(data)
    w.abort()  # an error while writing: the file must not read as data
    with pytest.raises(ValueError):
        w.finish()
    w.close()
    dropped = io.BytesIO()  # a buffered writer closed or garbage-collected without finish()
    buffered = io.BufferedWriter(cipher.writer(dropped))
    buffered.write(data)
    buffered.close()
    for unfinished in (aborted, dropped):
        with pytest.raises(DecryptionError):
            cipher.decrypt(unfinished.getvalue())
        with pytest.raises(DecryptionError):
            b"".join(cipher.decrypt_file(io.BytesIO(unfinished.getvalue())))


class _ChangesAfterFirstRead(io.BytesIO):
    """A file whose bytes are replaced once it has been read to the end (between two passes)."""

    def __init__(self, first: bytes, second: bytes):
        super().__init__(first)
        self.second, self.swapped = second, False

    def read(self, n=-1):
        out = super().read(n)
        if not out and not self.swapped:
            pos, self.swapped = self.tell(), True
            self.seek(0)
            self.write(self.second)
            self.seek(pos)
        return out


def test_a_file_altered_between_the_check_and_the_decryption_raises_before_its_last_piece():
    """The streamed reader authenticates the whole token, then decrypts it in a second pass; a file
    changed in between (one IV bit flipped: CBC would turn it into a flipped plaintext bit) must not
    decrypt quietly: the second pass checks the HMAC again before the last piece."""
    import base64

    from cryptography.fernet import Fernet

    from recsys.privacy.crypto import MAGIC, Cipher, DecryptionError

    cipher = Cipher([Fernet.generate_key().decode()])
    blob = cipher.encrypt(b"A" * 100_000)
    token = bytearray(base64.urlsafe_b64decode(blob[len(MAGIC) :]))
    token[9] ^= 1  # the IV's first byte
    altered = MAGIC + base64.urlsafe_b64encode(bytes(token))
    with pytest.raises(DecryptionError):
        b"".join(cipher.decrypt_file(_ChangesAfterFirstRead(blob, altered)))


def test_chunked_collect_on_a_lake_at_a_url_commits_each_file_through_its_manifest(tmp_path):
    from cryptography.fernet import Fernet

    from recsys.config import Settings
    from recsys.data.object_lake import open_lake
    from recsys.privacy.crypto import Cipher

    s = Settings(data_dir=tmp_path / "data", lake_url=(tmp_path / "bucket").as_uri())
    lake = open_lake(s, s.data_dir, Cipher([Fernet.generate_key().decode()]))
    data = hostile_day()
    for dataset, body in (("events", data), ("videos", jsonl(videos())), ("users", jsonl(users()))):
        lake.write_bytes("landing", dataset, DS, "part-0.jsonl", body)
    summary = collect.collect_day(lake, DS, 7)
    whole, malformed = parse_jsonl(data)
    pd.testing.assert_frame_equal(lake.read_frame("raw", "events", DS), whole, check_exact=True)
    assert summary["input_rows"] == len(whole) + len(malformed)
    assert lake.store.names(f"landing/events/ds={DS}") == ["part-0.jsonl.enc"]
    assert lake.read_bytes("landing", "events", DS, "part-0.jsonl.enc").startswith(b"RSENC1")
    assert not [p for p in (s.data_dir / "cache").rglob("*") if p.is_file()]  # no staged file left
    assert collect.collect_day(lake, DS, 3) == summary  # again, from the sealed copy


KILLED_CHILD = """
import sys, time
from pathlib import Path
from recsys import stages
from recsys.config import load_settings
from recsys.data import collect

original, calls = collect._events_table, []

def stall(*args):
    calls.append(1)
    if len(calls) == 3:  # two chunks are in the staged files: stop here until killed
        Path(sys.argv[2]).write_text("staged")
        time.sleep(600)
    return original(*args)

collect._events_table = stall
stages.collect(sys.argv[1], load_settings())
"""


def test_a_killed_collect_leaves_no_partial_raw_partition_and_the_next_run_cleans_up(settings, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    land(settings.data_dir, jsonl([event(i) for i in range(40)]))
    marker = tmp_path / "marker"
    env = {**os.environ, "RECSYS_DATA_DIR": str(settings.data_dir), "RECSYS_COLLECT__CHUNK_ROWS": "5"}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_CHILD, str(DS), str(marker)], env=env)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None, "collect ended before it could be killed"
            assert time.monotonic() < deadline, "collect did not reach its third chunk"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    staged = [p for p in settings.data_dir.rglob(".*.tmp-*") if p.is_file()]
    assert staged  # the dead run's staged files (encrypted, hidden) ...
    raw = settings.data_dir / "raw"
    assert not [p for p in raw.rglob("*") if p.is_file() and not p.name.startswith(".")]  # ... no partition
    assert (landing_dir(settings.data_dir, "events") / "part-0.jsonl").exists()
    from recsys import stages

    assert stages.collect(DS, settings)["input_rows"] == 40  # the next run removes them and succeeds
    assert not [p for p in settings.data_dir.rglob(".*.tmp-*")]
    assert len(lake_of(settings).read_frame("raw", "events", DS)) == 40


@pytest.mark.parametrize("chunk_rows", [1, 50_000])
def test_objects_without_a_key_are_kept_as_rows_for_validate_to_judge(settings, chunk_rows):
    """A day of ``{}`` lines: a table needs a column to hold rows, so they come out with a null
    event_id for validate to judge, never silently dropped (the row counts stay conserved)."""
    summary, frames, sealed = collected(settings, b"{}\n{}\n{}\n", chunk_rows)
    assert summary["input_rows"] == 3 and summary["malformed_rows"] == 0
    assert len(frames["events"]) == 3 and frames["events"]["event_id"].isna().all()
    assert sealed == b"{}\n{}\n{}\n"


@pytest.mark.parametrize(
    "values",
    [
        ["a", None, "", "é\u2028"],
        [1, -2, None, 0, 2**63 - 1, -(2**63)],
        [1, 2**63, None],  # beyond int64: value by value
        [1, True, False, None],  # booleans are JSON's true/false, not 1/0
        [1.0, 0.1, 1e400, -0.0, None, float("nan")],
        [{"a": [1, "é"]}, [], "x", 3],
        [None, None],
    ],
)
def test_a_column_of_json_values_is_their_loose_text(values):
    from recsys.data.collect import _text_column
    from recsys.data.sources import loose_text

    assert _text_column(values).to_pylist() == [loose_text(v) for v in values]
