"""The contract between the fitted transform, the model and serving.

The transform turns a frame of (user, video, context) rows into a dict of arrays named below; the model
takes exactly that dict. Index 0 of every categorical input means "unknown / out of vocabulary" (and
for ``position``, "not known", which is how serving calls the model).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

# Categorical inputs, each an int32 array of shape [batch].
CATEGORICAL = (
    "user",
    "video",
    "author",
    "category",
    "device",
    "region",
    "age_band",
    "activity",
    "hour",
    "dow",
)
# Numeric inputs, normalized with training-window statistics; one float32 array [batch, len(NUMERIC)].
NUMERIC = (
    "log_duration",
    "upload_age_days",
    "video_popularity",
    "user_activity",
    "user_category_affinity",
    "user_author_affinity",
    "user_video_coengagement",
)
# What each numeric input depends on: the video alone, the user alone, or the (user, video) pair.
NUMERIC_SIDE = {
    "log_duration": "video",
    "upload_age_days": "video",
    "video_popularity": "video",
    "user_activity": "user",
    "user_category_affinity": "pair",
    "user_author_affinity": "pair",
    "user_video_coengagement": "pair",  # the video's co-engagement with the user's history
}
# Pair features: the user's smoothed click-through lift on the video's category / author, from the
# training window (name -> the example column holding the video's side of the pair).
AFFINITY = {"user_category_affinity": "category", "user_author_affinity": "author_id"}
TITLE = "title"  # int32 [batch, title_len]; 0 = padding, 1 = out of vocabulary
POSITION = "position"  # int32 [batch]; 0 = unknown (always at serving)
DEVICE = "device"

# Labels: one float32 [batch] per task of the task spec (recsys/tasks.py), named after the task; NaN
# where a row has no label for that task (masked out of the loss).


@dataclass(frozen=True)
class FeatureSpec:
    """Sizes the model needs to build its input layers."""

    vocab_sizes: dict[str, int]  # categorical name -> size, index 0 included
    title_vocab_size: int
    title_len: int
    n_numeric: int = len(NUMERIC)
    n_positions: int = 21  # positions 1..20, 0 = unknown
    categorical: tuple[str, ...] = field(default=CATEGORICAL)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> FeatureSpec:
        d = dict(d)
        d["categorical"] = tuple(d.get("categorical", CATEGORICAL))
        return cls(**d)
