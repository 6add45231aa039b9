"""Ranking, the second stage: score every (user, candidate) pair with the champion, keep the top N.

Scoring rows carry the same columns as training examples (user attributes, video metadata, context); the
position is unknown at serving. A diversity rule caps the videos per author and per category in a list.

Two encoders feed the same model call:

* :func:`encode_frame` - the transform applied row by row to any frame (the real-time path, and what the
  MLflow pyfunc does);
* :func:`encode_pairs` - for a frame built by :func:`scoring_frame` (one serving time, user attributes a
  function of ``user_key``, video attributes a function of ``video_id``): the transform runs once per
  distinct user and once per distinct video, and each batch gathers its rows from those two tables. The
  inputs are the same arrays :func:`encode_frame` gives (a test checks it), at a fraction of the cost.

The model is called directly (``model(x, training=False)`` in one ``tf.function`` per model, large
batches), not through ``model.predict``.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections.abc import Iterator
from datetime import date

import numpy as np
import pandas as pd

from recsys import tasks
from recsys.features.pairs import pair_affinity
from recsys.features.spec import AFFINITY, NUMERIC_SIDE, POSITION, TITLE
from recsys.serving.diversity import _top_n_codes, top_n

PAIR_SIDES = (*AFFINITY.values(), "video_id")  # the video columns the pair inputs read
USER_COLUMNS = ("user_key", "device", "region", "age_band", "activity")
VIDEO_COLUMNS = ("video_id", "author_id", "category", "title", "duration_seconds", "upload_ts")
# which model inputs depend on which side of a (user, video) pair
USER_INPUTS = ("user", "device", "region", "age_band", "activity")
VIDEO_INPUTS = ("video", "author", "category", TITLE)
CONTEXT_INPUTS = ("hour", "dow")
BATCH_SIZE = 65536


def scoring_frame(
    user_keys: list[str],
    candidates: dict[str, list[int]],
    users: pd.DataFrame,
    videos: pd.DataFrame,
    at: pd.Timestamp,
) -> pd.DataFrame:
    """One row per (user, candidate video) with the columns the transform reads."""
    lists = [candidates.get(u, []) for u in user_keys]
    lens = np.fromiter((len(c) for c in lists), dtype=np.int64, count=len(lists))
    pairs = pd.DataFrame(
        {
            "user_key": np.repeat(np.asarray(list(user_keys), dtype=object), lens),
            "video_id": np.fromiter(
                itertools.chain.from_iterable(lists), dtype=np.int64, count=int(lens.sum())
            ),
        }
    )
    u = users.drop_duplicates("user_key", keep="last")[list(USER_COLUMNS)]
    v = videos.drop_duplicates("video_id", keep="last")[list(VIDEO_COLUMNS)].copy()
    v["video_id"] = v["video_id"].astype("int64")
    df = pairs.merge(u, on="user_key", how="left").merge(v, on="video_id", how="left")
    df["ts"] = at
    return df


# ------------------------------------------------------------------------------------------ encoding
def encode_frame(transform, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Model inputs for any frame of rows (position unknown)."""
    x = transform.apply(frame)
    x[POSITION] = np.zeros(len(frame), dtype=np.int32)
    return x


class PairInputs:
    """Model inputs of (user, video) pairs, kept as a user table, a video table and row indices.

    ``users_x``/``videos_x``: the transform's arrays for one row per distinct user / video (any partner
    on the other side: only the side's own inputs are read); ``user_idx``/``video_idx``: per pair.
    Numeric inputs of the pair itself (the affinities) come from ``pair``
    (:func:`recsys.features.pairs.pair_affinity`).
    """

    def __init__(
        self,
        users_x: dict[str, np.ndarray],
        videos_x: dict[str, np.ndarray],
        user_idx: np.ndarray,
        video_idx: np.ndarray,
        numeric: list[str] | tuple[str, ...],
        pair=None,
    ):
        self.n = len(user_idx)
        self.user_idx, self.video_idx = user_idx, video_idx
        self.users, self.videos = users_x, videos_x
        self.numeric = list(numeric)
        sides = [NUMERIC_SIDE.get(name, "pair") for name in self.numeric]
        if "pair" in sides and pair is None:
            raise ValueError("pair features without a pair look-up")
        self.sides, self.pair = sides, pair
        self.context = {k: self.users[k][:1] for k in CONTEXT_INPUTS}

    @classmethod
    def from_frame(cls, transform, frame: pd.DataFrame) -> PairInputs:
        user_idx, u_first = _first_rows(frame["user_key"])
        video_idx, v_first = _first_rows(frame["video_id"])
        video_rows = frame.iloc[v_first]
        return cls(
            encode_frame(transform, frame.iloc[u_first]),
            encode_frame(transform, video_rows),
            user_idx,
            video_idx,
            transform.numeric,
            pair_affinity(
                transform,
                frame["user_key"].iloc[u_first].to_numpy(object),
                {c: video_rows[c].to_numpy(object) for c in PAIR_SIDES},
            ),
        )

    def batch(self, start: int, stop: int) -> dict[str, np.ndarray]:
        ui, vi = self.user_idx[start:stop], self.video_idx[start:stop]
        x = {k: self.users[k][ui] for k in USER_INPUTS}
        x.update({k: self.videos[k][vi] for k in VIDEO_INPUTS})
        x.update({k: np.repeat(v, len(ui)) for k, v in self.context.items()})
        pair = self.pair(ui, vi) if self.pair is not None else {}
        numeric = np.empty((len(ui), len(self.numeric)), dtype=np.float32)
        for j, (name, side) in enumerate(zip(self.numeric, self.sides, strict=True)):
            if side == "user":
                numeric[:, j] = self.users["numeric"][ui, j]
            elif side == "video":
                numeric[:, j] = self.videos["numeric"][vi, j]
            else:
                numeric[:, j] = pair[name]
        x["numeric"] = numeric
        x[POSITION] = np.zeros(len(ui), dtype=np.int32)
        return x

    def full(self) -> dict[str, np.ndarray]:
        return self.batch(0, self.n)


class SideTables:
    """The model inputs of a set of users and a set of videos at one serving time, each side encoded once:
    the inputs of any (user, video) pair among them are gathered from the two tables
    (:meth:`inputs`). What :func:`rank_pairs` and the catalog evaluation score with; the arrays are those
    :func:`encode_frame` gives the pairs' :func:`scoring_frame` (a test checks it)."""

    def __init__(self, transform, user_keys, video_ids, users: pd.DataFrame, videos: pd.DataFrame, at):
        self.transform = transform
        self.user_keys = np.asarray(user_keys, dtype=object)
        self.video_ids = np.asarray(video_ids, dtype=np.int64)
        if not len(self.user_keys) or not len(self.video_ids):
            raise ValueError("side tables need at least one user and one video")
        first_user, first_video = self.user_keys[0], int(self.video_ids[0])
        # every user beside one video, one user beside every video: only each side's own inputs are read
        user_rows = scoring_frame(
            list(self.user_keys), dict.fromkeys(self.user_keys, [first_video]), users, videos, at
        )
        self.video_rows = scoring_frame(
            [first_user], {first_user: self.video_ids.tolist()}, users, videos, at
        )
        self.users_x = encode_frame(transform, user_rows)
        self.videos_x = encode_frame(transform, self.video_rows)
        self.pair = pair_affinity(
            transform, self.user_keys, {c: self.video_rows[c].to_numpy(object) for c in PAIR_SIDES}
        )

    def inputs(self, user_idx: np.ndarray, video_idx: np.ndarray) -> PairInputs:
        """The inputs of the pairs (``user_keys[user_idx[i]]``, ``video_ids[video_idx[i]]``)."""
        return PairInputs(self.users_x, self.videos_x, user_idx, video_idx, self.transform.numeric, self.pair)


def _first_rows(col: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    codes, uniques = pd.factorize(col, use_na_sentinel=False)
    first = np.full(len(uniques), -1, dtype=np.int64)
    order = np.arange(len(codes) - 1, -1, -1)
    first[codes[order]] = order  # the last write per code is its first row
    return codes.astype(np.int64), first


def _one_serving_time(frame: pd.DataFrame) -> bool:
    if frame.empty or "ts" not in frame.columns:
        return False
    ts = frame["ts"]
    if isinstance(ts.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(ts):
        return bool(ts.notna().all() and ts.min() == ts.max())
    return ts.nunique(dropna=False) == 1


def encode_pairs(transform, frame: pd.DataFrame) -> PairInputs | None:
    """:class:`PairInputs` for a scoring frame, or None when the frame does not have its shape."""
    if not _one_serving_time(frame) or not set(USER_COLUMNS + VIDEO_COLUMNS) <= set(frame.columns):
        return None
    return PairInputs.from_frame(transform, frame)


# ------------------------------------------------------------------------------------------ the model call
_FUNCTIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def _serving_function(model):
    """``model(x, training=False)`` as one traced function with a dynamic batch dimension."""
    with _LOCK:
        fn = _FUNCTIONS.get(model)
        if fn is None and not hasattr(model, "dummy_inputs"):  # not our model class: Keras' own loop

            def fn(x):
                return model.predict(x, batch_size=len(next(iter(x.values()))), verbose=0)

            _FUNCTIONS[model] = fn
        if fn is None:
            import tensorflow as tf

            dummy = model.dummy_inputs(1)
            signature = {
                k: tf.TensorSpec((None, *np.shape(v)[1:]), tf.as_dtype(np.asarray(v).dtype), name=k)
                for k, v in dummy.items()
            }

            outputs = tasks.names(tasks.of_model(model))

            @tf.function(input_signature=[signature], reduce_retracing=True)
            def traced(x):
                out = model(x, training=False)
                return {k: out[k] for k in outputs if k in out}

            keys = tuple(signature)

            def call(x):
                return traced({k: x[k] for k in keys})

            _FUNCTIONS[model] = fn = call
        return fn


def _batches(n: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, size):
        yield start, min(n, start + size)


def predict_tasks(
    ranker, frame: pd.DataFrame, batch_size: int = BATCH_SIZE, encoding: str = "auto"
) -> dict[str, np.ndarray]:
    """Per-task predictions ``{task: [N]}`` for the rows of ``frame`` with ``ranker``'s model and transform.

    ``encoding``: "pairs" (:func:`encode_pairs`, for scoring frames; "auto" uses it when the frame has
    that shape) or "frame" (:func:`encode_frame`, row by row).
    """
    n = len(frame)
    if n == 0:
        return {k: np.zeros(0, dtype=np.float32) for k in tasks.names(tasks.of_model(ranker.model))}
    pairs = encode_pairs(ranker.transform, frame) if encoding != "frame" else None
    if encoding == "pairs" and pairs is None:
        raise ValueError("frame is not a scoring frame (one serving time, user and video columns)")
    get = pairs.batch if pairs is not None else _slicer(encode_frame(ranker.transform, frame))
    return run_model(ranker.model, get, n, batch_size)


def run_model(model, get, n: int, batch_size: int) -> dict[str, np.ndarray]:
    fn = _serving_function(model)
    parts: dict[str, list[np.ndarray]] = {}
    for start, stop in _batches(n, batch_size):
        out = fn(get(start, stop))
        for k, v in out.items():
            parts.setdefault(k, []).append(np.asarray(v).reshape(-1))
    return {k: np.concatenate(v) for k, v in parts.items()}


def _slicer(x: dict[str, np.ndarray]):
    return lambda start, stop: {k: v[start:stop] for k, v in x.items()}


def predict_scores(
    ranker, frame: pd.DataFrame, batch_size: int = BATCH_SIZE, encoding: str = "auto"
) -> np.ndarray:
    """The ranking score of every row (what :meth:`recsys.registry.Ranker.predict` calls ``score``)."""
    from recsys.features.negatives import ranking_scores

    return ranking_scores(ranker, predict_tasks(ranker, frame, batch_size, encoding), frame["video_id"])


def serving_time(ds: date) -> pd.Timestamp:
    """Lists computed for day ``ds`` are served the next day; context features use that moment."""
    return pd.Timestamp(ds, tz="UTC") + pd.Timedelta(days=1, hours=18)


def rank_candidates(
    ranker,
    frame: pd.DataFrame,
    n: int,
    max_per_author: int,
    max_per_category: int | None = None,
    *,
    encoding: str = "auto",
    batch_size: int = BATCH_SIZE,
) -> pd.DataFrame:
    """Score ``frame`` (a :func:`scoring_frame`) with ``ranker`` and keep each user's diverse top ``n``."""
    scores = predict_scores(ranker, frame, batch_size, encoding)
    return top_n(frame, scores, n, max_per_author, max_per_category)


def rank_pairs(
    ranker,
    user_keys: list[str],
    candidates: dict[str, list[int]],
    users: pd.DataFrame,
    videos: pd.DataFrame,
    at: pd.Timestamp,
    n: int,
    max_per_author: int,
    max_per_category: int | None = None,
    batch_size: int = BATCH_SIZE,
) -> pd.DataFrame:
    """``rank_candidates(ranker, scoring_frame(user_keys, candidates, users, videos, at), ...)`` without
    building the pair frame: the transform runs on one row per user and one per video, and top N works
    on integer codes. The batch path; the same lists and scores (a test checks it)."""
    from recsys.features.negatives import ranking_scores

    lists = [candidates.get(u, []) for u in user_keys]
    lens = np.fromiter((len(c) for c in lists), dtype=np.int64, count=len(lists))
    vids = np.fromiter(itertools.chain.from_iterable(lists), dtype=np.int64, count=int(lens.sum()))
    if len(vids) == 0 or n <= 0:
        return top_n(pd.DataFrame({"user_key": [], "video_id": []}), np.zeros(0), n, max_per_author)
    ucode_given, ukeys = pd.factorize(pd.Index(list(user_keys), dtype=object))
    ukeys = np.asarray(ukeys, dtype=object)
    vcode, vuniq = pd.factorize(vids)
    sides = SideTables(ranker.transform, ukeys, vuniq, users, videos, at)
    inputs = sides.inputs(np.repeat(ucode_given, lens), vcode.astype(np.int64))
    video_rows = sides.video_rows
    preds = run_model(ranker.model, inputs.batch, inputs.n, batch_size)
    scores = ranking_scores(ranker, preds, vids)
    by_name = np.argsort(ukeys, kind="stable")  # codes in user-key order, as top_n sorts
    sorted_code = np.empty(len(ukeys), dtype=np.int64)
    sorted_code[by_name] = np.arange(len(ukeys))
    acode = pd.factorize(video_rows["author_id"])[0] if "author_id" in video_rows.columns else None
    ccode = pd.factorize(video_rows["category"])[0] if "category" in video_rows.columns else None
    none = np.full(len(vuniq), -1)
    return _top_n_codes(
        ukeys[by_name],
        sorted_code[inputs.user_idx],
        vids,
        (acode if acode is not None else none)[vcode],
        (ccode if ccode is not None else none)[vcode],
        scores,
        n,
        max_per_author,
        max_per_category,
    )
