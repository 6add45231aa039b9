"""Minimization: one declared policy for every raw column, applied by the anonymize stage.

Each raw column is dropped, pseudonymized (keyed HMAC), generalized, or kept. A column the policy does not
name is refused (deny by default): a new upstream field cannot slip personal data past this stage.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from typing import Literal

import pandas as pd

from recsys.privacy.pseudonymize import pseudonymize_many
from recsys.privacy.withheld import ChunkError, withheld  # noqa: F401  (ChunkError: what a chunk raises)

Action = Literal["drop", "pseudonymize", "generalize", "keep"]

# raw column -> (action, output column)
EVENT_POLICY: dict[str, tuple[Action, str | None]] = {
    "event_id": ("keep", "event_id"),
    "user_id": ("pseudonymize", "user_key"),
    "email": ("drop", None),
    "ip": ("drop", None),
    "device": ("keep", "device"),
    "region": ("generalize", "region"),
    "ts": ("keep", "ts"),
    "session_id": ("pseudonymize", "session_key"),
    "video_id": ("keep", "video_id"),
    "position": ("keep", "position"),
    "rec_version": ("keep", "rec_version"),
    "clicked": ("keep", "clicked"),
    "watch_seconds": ("keep", "watch_seconds"),
    "liked": ("keep", "liked"),
    "shared": ("keep", "shared"),
}

USER_POLICY: dict[str, tuple[Action, str | None]] = {
    "user_id": ("pseudonymize", "user_key"),
    "email": ("drop", None),
    "age_band": ("keep", "age_band"),
    "gender": ("keep", "gender"),
    "region": ("generalize", "region"),
    "device": ("keep", "device"),
    "activity": ("keep", "activity"),
    "signup_ts": ("drop", None),
}

# pseudonym domains keep a user id and a session id with the same text from getting the same token
DOMAIN = {"user_id": "user", "session_id": "session"}


class PolicyError(ValueError):
    """A raw column has no declared policy."""


class RawChunk:
    """A chunk of raw rows on its way to be minimized (on a Dask worker, perhaps): its repr, which is what
    Dask logs of a failed task's arguments, shows no value."""

    __slots__ = ("frame",)

    def __init__(self, frame: pd.DataFrame):
        self.frame = frame

    def __repr__(self) -> str:
        return f"<RawChunk: {len(self.frame)} raw rows, values withheld>"


def coarse_region(region: str | None) -> str | None:
    """'EU-DE-BE' -> 'EU-DE': the country, never the city."""
    if region is None or region is pd.NA:
        return None
    return "-".join(str(region).split("-")[:2])


def ip_prefix(ip: str | None, v4_bits: int = 24, v6_bits: int = 48) -> str | None:
    """Generalize an IP address to its network prefix (e.g. 10.1.2.3 -> 10.1.2.0/24)."""
    if ip is None or ip is pd.NA:
        return None
    try:
        addr = ipaddress.ip_address(str(ip))
    except ValueError:
        return None
    bits = v4_bits if addr.version == 4 else v6_bits
    return str(ipaddress.ip_network(f"{addr}/{bits}", strict=False))


GENERALIZERS = {"region": coarse_region, "ip": ip_prefix}


def apply_policy(df: pd.DataFrame, policy: dict[str, tuple[Action, str | None]], key: bytes) -> pd.DataFrame:
    """Return the minimized frame. Raises :class:`PolicyError` naming any column the policy lacks."""
    unknown = [c for c in df.columns if c not in policy]
    if unknown:
        raise PolicyError(
            f"raw column(s) {unknown} have no privacy policy; declare them "
            "(drop, pseudonymize, generalize or "
            "keep) in recsys/privacy/anonymize.py before they can pass the anonymize stage"
        )
    out = {}
    for col, (action, target) in policy.items():
        if col not in df.columns or action == "drop":
            continue
        if action == "pseudonymize":
            out[target] = pd.array(
                pseudonymize_many(df[col], key, domain=DOMAIN.get(col, col)), dtype="string"
            )
        elif action == "generalize":
            out[target] = df[col].map(GENERALIZERS[col]).astype("string")
        else:
            out[target] = df[col]
    return pd.DataFrame(out, index=df.index).reset_index(drop=True)


def anonymize_data(
    data: pd.DataFrame,
    columns: Sequence[str] | None = None,
    *,
    key: bytes | None = None,
    settings=None,
) -> pd.DataFrame:
    """Pseudonymize identifiers with the pipeline's keyed HMAC (the seed's ``anonymize_data``).

    Args:
        data: a frame holding raw identifiers. It is not modified.
        columns: the identifier columns to pseudonymize; each is replaced by its pseudonym column as
            the policy names it (``user_id`` -> ``user_key``, ``session_id`` -> ``session_key``, any other
            column keeps its name), with the pipeline's domains, so ``user_id`` gives the ``user_key`` of
            the recommendation tables. The other columns are returned as they are. Default (None): the
            anonymize stage's full minimization of raw events under :data:`EVENT_POLICY` (deny by
            default: a column without a declared policy raises :class:`PolicyError`).
        key: the HMAC key, default the configured one (``RECSYS_PRIVACY__PSEUDONYM_KEY``).

    Returns:
        A new DataFrame with the same rows, identifiers replaced by 32-hex-character pseudonyms.
    """
    if isinstance(columns, bytes):  # the earlier form anonymize_data(events, key)
        columns, key = None, columns
    if key is None:
        from recsys.defaults import settings_or_default
        from recsys.privacy.pseudonymize import load_pseudonym_key

        key = load_pseudonym_key(settings_or_default(settings))
    if columns is None:
        return apply_policy(data, EVENT_POLICY, key)
    missing = [c for c in columns if c not in data.columns]
    if missing:
        raise KeyError(f"no column(s) {missing} to pseudonymize; have {list(data.columns)}")
    out = data.copy()
    for col in columns:
        out[col] = pd.array(pseudonymize_many(out[col], key, domain=DOMAIN.get(col, col)), dtype="string")
    targets = {c: EVENT_POLICY[c][1] for c in columns if c in EVENT_POLICY and EVENT_POLICY[c][1]}
    return out.rename(columns=targets).reset_index(drop=True)


def anonymize_users(users: pd.DataFrame, key: bytes) -> pd.DataFrame:
    return apply_policy(users, USER_POLICY, key)


DEFAULT_CHUNK_ROWS = 100_000  # valid raw rows pseudonymized and written at a time


def anonymize_day(
    lake,
    ds,
    key: bytes,
    erased: set[str] | frozenset[str] = frozenset(),
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    map_chunks: Callable = map,
) -> dict:
    """Valid raw rows of ``ds`` -> clean zone: keyed pseudonyms, PII dropped or generalized; users in
    ``erased`` (pseudonyms of erasure requests) are left out, so they never come back through a new day.

    The valid events are read ``chunk_rows`` rows at a time through the decrypting reader, minimized and
    written as row groups of a staged file; the three clean files are committed only when all are
    complete (a failed or killed run leaves hidden staged files only). The policy works row by row, so
    the output does not depend on ``chunk_rows``.

    ``map_chunks(fn, frames)``: how the chunks are minimized, results in chunk order (default: here, one
    after another; :func:`recsys.scale.map_in_order` runs them on Dask workers, the stage's choice when
    ``RECSYS_DASK_SCHEDULER`` is set). Reading, writing and committing stay in this process.
    """
    import contextlib

    import pyarrow as pa

    from recsys.data.lake import frame_to_parquet_bytes
    from recsys.data.staged import FrameFile, Staged

    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")

    def minimized(frame: pd.DataFrame) -> pd.DataFrame:
        events = anonymize_data(frame, key)
        if erased:
            events = events[~events["user_key"].isin(erased)].reset_index(drop=True)
        return events

    def minimized_chunk(chunk: RawChunk) -> pd.DataFrame:
        try:
            return minimized(chunk.frame)
        except PolicyError:
            raise  # names columns, never values
        except Exception as exc:  # its message may quote a raw value: the type and the place only
            raise withheld(exc, f"minimizing a chunk of {len(chunk.frame)} raw rows") from None

    staged: list = []
    ok = False
    try:
        with lake.open_frame("raw", "valid_events", ds) as reader:
            interactions = FrameFile(
                lake, "interactions", ds, minimized(reader.schema.empty_table().to_pandas()), zone="clean"
            )
            staged.append(interactions)
            chunks = (RawChunk(frame) for frame in reader.frame_batches(chunk_rows))
            for events in map_chunks(minimized_chunk, chunks):
                interactions.write(pa.Table.from_pandas(events, preserve_index=False))
            interactions.finish()
            reader.verify()  # the input did not change while it was read
        users = anonymize_users(lake.read_frame("raw", "users", ds), key)
        if erased:
            users = users[~users["user_key"].isin(erased)].reset_index(drop=True)
        for dataset, frame in (("users", users), ("videos", lake.read_frame("raw", "videos", ds))):
            one = Staged(lake, "clean", dataset, ds, lake.frame_file("clean"))
            staged.append(one)
            one.stream.write(frame_to_parquet_bytes(frame))
            one.close()
        for one in staged:
            (one._staged if isinstance(one, FrameFile) else one).commit()
        ok = True
    finally:
        if not ok:
            for one in staged:
                with contextlib.suppress(Exception):
                    one.discard()
    return {"interactions_rows": interactions.rows, "users_rows": len(users)}
