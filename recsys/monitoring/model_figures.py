"""How the model that served a day did on it: predicted vs observed CTR, and AUC on the exploration slice.

The online counterparts of the offline figures, scored as at serving time (position unknown).
"""

from __future__ import annotations

import logging
from datetime import date

import numpy as np
import pandas as pd

from recsys.config import Settings
from recsys.data.lake import Lake

log = logging.getLogger(__name__)


def online_model_figures(
    lake: Lake, settings: Settings, ds: date, events: pd.DataFrame, version: str, ranker=None
) -> dict:
    """How the registered model ``version`` (or a loaded ``ranker``) did on the events of ``ds``, scored as
    at serving (position unknown); {} when it cannot tell.

    - ``predicted_ctr`` and ``pred_obs_ratio``: mean predicted click probability of the day's recommended
      impressions, and its ratio to their observed CTR. Compare with the offline ``click_pred_obs_ratio``
      of that model's test day: a ratio that moves away from it says the world moved away from what the
      model learned. The lists hold the model's top picks, so the ratio sits above 1 (its errors are
      selected upwards), the more so the noisier the model: read it as a trend of one model.
    - ``exploration_click_auc`` and ``exploration_click_gauc``: the model's click AUC on the exploration
      impressions (videos it did not choose), pooled and per user (weighted by impressions, users with
      clicks and non-clicks). That slice is free of the model's own selection, so these are the online
      counterparts of the offline ``click_auc``/``click_gauc`` and compare two models on the same rows.
      The per-user figure is the one about ranking a user's list; the pooled one also credits telling
      active users from idle ones.
    """
    from recsys.evaluate import auc, gauc
    from recsys.features.build import build_examples
    from recsys.registry import load_ranker
    from recsys.serving.rank import predict_tasks

    frame = events.drop(columns=["category", "hour"], errors="ignore")
    if not frame["rec_version"].notna().any():
        return {}
    try:
        ranker = ranker or load_ranker(settings, version=version)
        examples = build_examples(
            frame, lake.read_frame("clean", "videos", ds), lake.read_frame("clean", "users", ds)
        )
        p_click = predict_tasks(ranker, examples, encoding="frame")["click"]
    except Exception as exc:  # a figure, not a reason to fail the monitor
        log.warning("monitor ds=%s: no predicted click rate with model %s: %s", ds, version, exc)
        return {}
    # build_examples reorders the rows: align the slice on the event id
    from_list = dict(zip(frame["event_id"], frame["rec_version"].notna(), strict=True))
    recommended = examples["event_id"].map(from_list).fillna(False).to_numpy(bool)
    clicked = examples["click"].to_numpy(float)
    predicted, observed = float(p_click[recommended].mean()), float(clicked[recommended].mean())
    out = {"predicted_ctr": predicted, "pred_obs_ratio": predicted / observed if observed > 0 else None}
    explored = ~recommended
    if explored.any():
        y, p, users = clicked[explored], p_click[explored], examples["user_key"].to_numpy()[explored]
        figures = {"exploration_click_auc": auc(y, p), "exploration_click_gauc": gauc(y, p, users)}
        out |= {k: v for k, v in figures.items() if np.isfinite(v)}
    return out
