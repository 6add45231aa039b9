"""The evaluate stage in bounded memory: chunking must not change a single figure.

:func:`recsys.evaluate.evaluate_run` scores the test split ``chunk_rows`` rows at a time and summarizes
train + valid in chunks (:mod:`recsys.eval_data`). Here, on a features folder built by the pipeline's own
stages: a chunk of 7 rows and one chunk for everything give the same result, to the last bit, and both
equal the figures of the whole frames (what the stage computed before it was chunked).
"""

from __future__ import annotations

import json
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tiny import TINY_MODEL, TINY_SIM, features_of_days

from recsys import tasks


@pytest.fixture(scope="module")
def day(tmp_path_factory):
    """(settings, features dir, candidate, champion): two simulated days through the stages; two seeded
    (untrained) rankers on the day's transform."""
    from cryptography.fernet import Fernet

    from recsys.config import ModelSettings, load_settings
    from recsys.features.transform import Transform
    from recsys.model import build_multi_task_model
    from recsys.registry import Ranker

    root = tmp_path_factory.mktemp("evalchunks")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RECSYS_PRIVACY__PSEUDONYM_KEY", "test-pseudonym-key-0123456789")
        mp.setenv("RECSYS_PRIVACY__ENCRYPTION_KEYS", Fernet.generate_key().decode())
        settings = load_settings(data_dir=root / "data", simulator=TINY_SIM, model=TINY_MODEL)
        last = date(2026, 1, 2)
        fdir = features_of_days(settings, date(2026, 1, 1), 2)
        transform = Transform.load(fdir / "transform.json")
        weights = tasks.score_weights(settings.model.score_weights)

        def ranker(seed, version):
            model = build_multi_task_model(transform.spec(), ModelSettings(**TINY_MODEL), seed=seed)
            return Ranker(model, transform, weights, version)

        yield settings, fdir, last, ranker(1, "candidate"), ranker(2, "champion")


def _text(result: dict) -> str:
    """The result as JSON text: exact float reprs, NaN comparable."""
    return json.dumps(result, sort_keys=True, default=float)


def test_a_tiny_chunk_and_one_chunk_give_the_same_evaluation(day, monkeypatch):
    import recsys.eval_data as ed
    from recsys.evaluate import evaluate_run
    from recsys.sim import world_for

    settings, fdir, ds, candidate, champion = day
    n_test = pq.ParquetFile(fdir / "test.parquet").metadata.num_rows
    n_history = sum(pq.ParquetFile(fdir / f"{p}.parquet").metadata.num_rows for p in ("train", "valid"))
    assert n_test > 50 and n_history > 200
    seen = []
    chunks = ed.chunks

    def counted(path, rows, columns=None):  # the frames evaluate_run really received
        for frame in chunks(path, rows, columns):
            seen.append(len(frame))
            yield frame

    monkeypatch.setattr(ed, "chunks", counted)
    results = {}
    for rows in (7, 10**9):
        seen.clear()
        cfg = settings.evaluate.model_copy(update={"chunk_rows": rows})
        world = world_for(settings)
        results[rows] = evaluate_run(candidate, champion, fdir, cfg, world=world, ds=ds, seed=3)
        # 3 baselines + 2 rankers each read the test split; the history is read once
        assert sum(seen) == 5 * n_test + n_history
        if rows == 7:
            assert max(seen) == 7 and len(seen) > 5 * (n_test // 7)
    tiny, whole = results[7], results[10**9]
    assert whole["test_rows"] == n_test and whole["champion"] and whole["truth"] and whole["ranking"]
    assert set(whole["baselines"]) == {"popularity", "recent_category", "covisitation"}
    assert _text(tiny) == _text(whole)


def test_the_chunked_figures_equal_those_of_the_whole_frames(day):
    """The figures of the split read whole, scored whole and the history kept whole (the stage before it
    was chunked) equal the chunked stage's: every scorer's metrics and the catalog ranking."""
    from recsys.baselines import fit_baselines
    from recsys.catalog_eval import pipeline_ranking
    from recsys.evaluate import _scored, evaluate_run, ranking_metrics, task_metrics

    settings, fdir, ds, candidate, champion = day
    cfg = settings.evaluate.model_copy(update={"chunk_rows": 11})
    result = evaluate_run(candidate, champion, fdir, cfg, ds=ds, seed=3)

    cols = [c for c in pq.ParquetFile(fdir / "test.parquet").schema_arrow.names if not c.startswith("x_")]
    test = pd.read_parquet(fdir / "test.parquet", columns=cols)
    history = pd.concat(
        [pd.read_parquet(fdir / f"{p}.parquet") for p in ("train", "valid")], ignore_index=True
    )
    labels = {t: test[t].to_numpy(float) for t in tasks.names()}
    users = test["user_key"].astype(str).to_numpy()
    items = test["video_id"].astype(str).to_numpy()
    scorers = {"candidate": candidate, "champion": champion}
    scorers |= {f"baseline_{n}": b for n, b in fit_baselines(history).items()}
    for name, model in scorers.items():
        p, score = _scored(model, test)
        m = task_metrics(labels, p, users)
        if not getattr(model, "calibrated", True):
            m = {k: v for k, v in m.items() if k.endswith(("_auc", "_gauc", "_rows"))}
        if name.startswith("baseline_"):
            m = {k: v for k, v in m.items() if not k.startswith(tuple(t.name for t in tasks.regression()))}
        m.update(ranking_metrics(users, items, labels["click"], score, cfg.k))
        got = result[name] if name in ("candidate", "champion") else result["baselines"][name[9:]]
        assert _text(got) == _text(m), name
    videos = pd.read_parquet(fdir / "catalog.parquet")
    rankers = {"candidate": candidate, "champion": champion}
    ranking = pipeline_ranking(rankers, history, test, videos, cfg.ranking_margin, 3, cfg.ranking_users)
    assert result["ranking"]["users"] > 0 and "baseline_als" in ranking["figures"]
    assert _text(result["ranking"]) == _text(ranking)


def test_chunks_are_cut_at_exact_row_counts_across_row_groups(tmp_path):
    from recsys.eval_data import chunks

    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"a": np.arange(23), "b": [f"k{i}" for i in range(23)]}), path, row_group_size=5)
    got = list(chunks(path, 7, ["a"]))
    assert [len(f) for f in got] == [7, 7, 7, 2] and list(got[0].columns) == ["a"]
    assert pd.concat(got)["a"].tolist() == list(range(23))
    pq.write_table(pa.table({"a": np.arange(0)}), tmp_path / "empty.parquet")
    (empty,) = chunks(tmp_path / "empty.parquet", 7)
    assert len(empty) == 0 and list(empty.columns) == ["a"]


def test_a_history_summary_read_in_chunks_equals_the_whole_frames(day):
    from recsys.eval_data import HistorySummary

    _, fdir, *_ = day
    paths = [fdir / f"{p}.parquet" for p in ("train", "valid")]
    whole = HistorySummary.of(pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True))
    wanted = sorted(whole.attributes["user_key"].astype(str).unique())[::3]
    read = HistorySummary.read(paths, wanted, rows=13)
    pd.testing.assert_frame_equal(read.engaged, whole.engaged[read.engaged.columns])
    pd.testing.assert_series_equal(read.video_clicks, whole.video_clicks)
    pd.testing.assert_series_equal(read.video_labels, whole.video_labels)
    np.testing.assert_array_equal(read.video_ids, whole.video_ids)
    assert (read.clicks, read.labelled, read.rows, read.ts_max, read.categories) == (
        whole.clicks,
        whole.labelled,
        whole.rows,
        whole.ts_max,
        whole.categories,
    )
    mine = whole.attributes[whole.attributes["user_key"].astype(str).isin(wanted)].reset_index(drop=True)
    pd.testing.assert_frame_equal(read.attributes, mine[read.attributes.columns])
    assert 0 < len(read.engaged) < read.rows and read.clicks == len(read.engaged)
