"""The tiny world and model the training tests share (seconds per fit; one place to change them)."""

from datetime import date, timedelta

TINY_SIM = {"n_users": 60, "n_videos": 80, "n_categories": 5, "n_authors": 10}
TINY_MODEL = {
    "embedding_dim": 4,
    "shallow_units": [16],
    "n_experts": 2,
    "n_shared_experts": 1,
    "expert_units": 8,
    "tower_units": 4,
}


def features_of_days(settings, start: date, days: int = 2):
    """``days`` simulated days from ``start`` through the ingestion stages, then the features of the last
    one (the pipeline's own stages); returns that features folder."""
    from recsys import stages

    for i in range(days):
        for st in (stages.land, stages.collect, stages.validate, stages.anonymize):
            st(start + timedelta(days=i), settings)
    last = start + timedelta(days=days - 1)
    stages.features(last, settings)
    return stages.features_dir(settings, last)
