"""The simulated world: catalog, users and hidden preferences (in the spirit of RecSim and KuaiSim).

The world is a pure function of the seed and the settings: :meth:`World.true_utility` is the expected
utility of a video for a user and :meth:`World.oracle` the best possible list. Drift events (settings)
change it from a given day: a preference shift, a new category, a popularity shock, or an upstream fault
that corrupts the written events (:mod:`recsys.sim.simulate` applies those).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.config import DriftEvent, SimulatorSettings
from recsys.data.schema import DEVICES

CATEGORY_WORDS = {
    "music": "song live cover remix concert guitar beat vocal",
    "gaming": "gameplay speedrun boss level stream esports build quest",
    "sports": "goal match highlights training dunk race final coach",
    "news": "breaking report update election economy weather interview city",
    "comedy": "prank sketch funny standup parody fail laugh roast",
    "cooking": "recipe easy dinner bake vegan spicy dessert noodles",
    "travel": "trip beach mountain hotel roadtrip island tour street",
    "tech": "review unboxing phone laptop setup coding gadget ai",
    "education": "lesson math history explained science lecture exam tips",
    "beauty": "makeup skincare tutorial hair nails routine glow look",
    "pets": "cat dog puppy kitten rescue cute training parrot",
    "film": "trailer scene movie recap behind review actor cinema",
    "dance": "choreo dance challenge kpop routine tutorial duet moves",
    "cars": "drift engine supercar restore test drive track tuning",
}
FILLER = ["new", "best", "my", "the", "top", "day", "vlog", "part", "official", "short"]
REGIONS = ("EU-DE-BE", "EU-DE-MU", "EU-FR-PA", "EU-ES-MA", "NA-US-NY", "NA-US-SF", "AS-JP-TO", "AS-IN-DE")
DEVICE_SHARE = (0.5, 0.3, 0.15, 0.05)
DEVICE_ETA = {"android": 0.9, "ios": 0.9, "web": 0.6, "tv": 1.3}  # examination decay with position
AGE_BANDS = ("13-17", "18-24", "25-34", "35-44", "45-54", "55+")
ACTIVITY = {"low": 0.25, "mid": 0.6, "high": 0.95}


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


@dataclass(frozen=True)
class World:
    """The hidden state of the platform. Build it with :func:`build_world`."""

    settings: SimulatorSettings
    seed: int
    start: date
    videos: pd.DataFrame  # catalog, including future uploads and drift-only videos
    users: pd.DataFrame  # raw users (ids, e-mails, attributes)
    video_vec: np.ndarray  # [n_videos, d]
    video_quality: np.ndarray  # [n_videos]
    user_vec: np.ndarray  # [n_users, d]
    shift_perm: np.ndarray  # category permutation used by a preference shift

    # -- drift-aware hidden state -----------------------------------------------------------------
    def _active_drift(self, day: date, kind: str) -> DriftEvent | None:
        hits = [d for d in self.settings.drift if d.kind == kind and d.day <= day]
        return hits[-1] if hits else None

    def user_vectors(self, day: date) -> np.ndarray:
        u = self.user_vec
        ev = self._active_drift(day, "preference_shift")
        if ev is not None:
            # users move toward the taste of another group of users
            u = (1 - min(ev.strength, 1.0)) * u + min(ev.strength, 1.0) * u[self.shift_perm]
        return u

    def quality(self, day: date) -> np.ndarray:
        q = self.video_quality.copy()
        ev = self._active_drift(day, "popularity_shock")
        if ev is not None:
            shock_rng = np.random.default_rng(self.seed + 7)
            shocked = shock_rng.choice(len(q), size=max(1, len(q) // 50), replace=False)
            q[shocked] += 2.0 * ev.strength
        return q

    def visible_mask(self, day: date) -> np.ndarray:
        end = pd.Timestamp(day, tz="UTC") + pd.Timedelta(days=1)
        return (self.videos["upload_ts"] < end).to_numpy(bool) & self.videos["visible"].to_numpy(bool)

    def affinity(self, user_idx: np.ndarray, video_idx: np.ndarray, day: date) -> np.ndarray:
        u = self.user_vectors(day)[user_idx]
        v = self.video_vec[video_idx]
        return (u * v).sum(-1) / np.sqrt(self.video_vec.shape[1]) + self.quality(day)[video_idx]

    def click_prob(self, aff: np.ndarray) -> np.ndarray:
        """P(click | examined)."""
        base = np.log(self.settings.base_click_rate / (1 - self.settings.base_click_rate))
        return _sigmoid(base + 0.4 + 1.5 * aff)

    def true_utility(self, user_idx: np.ndarray, video_idx: np.ndarray, day: date) -> np.ndarray:
        """Expected value of showing the video to the user at the top: P(click) x (1 + watch fraction)."""
        aff = self.affinity(np.asarray(user_idx), np.asarray(video_idx), day)
        return self.click_prob(aff) * (1.0 + _sigmoid(aff))

    def oracle(self, user_idx: int, k: int, day: date) -> np.ndarray:
        """The k visible videos with the highest true utility for the user (video indices)."""
        cand = np.flatnonzero(self.visible_mask(day))
        util = self.true_utility(np.full(len(cand), user_idx), cand, day)
        return cand[np.argsort(-util, kind="stable")[:k]]

    def user_index(self) -> dict[str, int]:
        return {u: i for i, u in enumerate(self.users["user_id"])}

    def video_index(self) -> dict[int, int]:
        return {int(v): i for i, v in enumerate(self.videos["video_id"])}


def _kuairand_tables(path: Path | None):
    if path is None:
        return None, None
    vpath, upath = Path(path) / "video_features_basic_pure.csv", Path(path) / "user_features_pure.csv"
    if not vpath.exists() or not upath.exists():
        raise FileNotFoundError(f"KuaiRand tables not found under {path}")
    vids = pd.read_csv(vpath, usecols=["author_id", "video_duration", "tag"])
    users = pd.read_csv(upath, usecols=["user_active_degree"])
    return vids, users


def build_world(settings: SimulatorSettings, seed: int, start: date = date(2026, 1, 1)) -> World:
    """Build the hidden world deterministically from ``seed``."""
    rng = np.random.default_rng(seed)
    d = settings.latent_dim
    cats = list(CATEGORY_WORDS)[: settings.n_categories]
    new_cat = list(CATEGORY_WORDS)[len(cats) % len(CATEGORY_WORDS)]
    centroids = rng.normal(size=(len(cats) + 1, d)) * 1.2
    kv, ku = _kuairand_tables(settings.kuairand_path)

    n_v = settings.n_videos
    cat_pop = 1.0 / np.arange(1, len(cats) + 1) ** 0.6
    vcat = rng.choice(len(cats), size=n_v, p=cat_pop / cat_pop.sum())
    author_cat = rng.choice(len(cats), size=settings.n_authors)
    vauthor = np.array(
        [
            rng.choice(np.flatnonzero(author_cat == c))
            if (author_cat == c).any()
            else rng.integers(settings.n_authors)
            for c in vcat
        ]
    )
    if kv is not None:
        dur = kv["video_duration"].dropna().to_numpy() / 1000.0
        duration = rng.choice(dur[(dur > 1) & (dur < 3600)], size=n_v)
    else:
        duration = np.clip(rng.lognormal(np.log(60), 0.9, size=n_v), 5, 3600)
    # A few videos arrive each day of the simulation ("fresh uploads"); most exist before it starts.
    upload_day = np.where(rng.random(n_v) < 0.15, rng.integers(0, 30, n_v), -rng.integers(1, 90, n_v))
    # Videos of a category that only becomes visible with a "new_category" drift.
    n_new = max(10, n_v // 20)
    new_ev = next((e for e in settings.drift if e.kind == "new_category"), None)
    vcat = np.concatenate([vcat, np.full(n_new, len(cats))])
    vauthor = np.concatenate([vauthor, rng.integers(0, settings.n_authors, n_new)])
    duration = np.concatenate([duration, np.clip(rng.lognormal(np.log(60), 0.9, n_new), 5, 3600)])
    new_day = (new_ev.day - start).days if new_ev else 10_000
    upload_day = np.concatenate([upload_day, np.full(n_new, new_day)])
    n_all = n_v + n_new
    names = cats + [new_cat + "_new"]
    words = [CATEGORY_WORDS[c.removesuffix("_new")].split() for c in names]
    titles = [
        " ".join(list(rng.choice(words[c], size=3, replace=False)) + [str(rng.choice(FILLER))]) for c in vcat
    ]
    if kv is not None:
        real_tags = kv["tag"].dropna().astype(str).to_numpy()
        drawn = rng.choice(real_tags, n_all)
        tags = ["|".join([names[c], f"kr{t}"]) for c, t in zip(vcat, drawn, strict=True)]
    else:
        tags = [names[c] for c in vcat]
    vvec = centroids[vcat] + 0.6 * rng.normal(size=(n_all, d))
    quality = rng.normal(0, 0.4, size=n_all)
    start_ts = pd.Timestamp(start, tz="UTC")
    videos = pd.DataFrame(
        {
            "video_id": np.arange(1000, 1000 + n_all, dtype=np.int64),
            "author_id": (vauthor + 50_000).astype(np.int64),
            "category": [names[c] for c in vcat],
            "tags": tags,
            "duration_seconds": np.round(duration, 1),
            "title": titles,
            "upload_ts": start_ts
            + pd.to_timedelta(upload_day, unit="D")
            + pd.to_timedelta(rng.integers(0, 86_400, n_all), unit="s"),
            "visible": rng.random(n_all) > 0.03,
        }
    )

    n_u = settings.n_users
    if ku is not None:
        deg = ku["user_active_degree"].astype(str).to_numpy()
        level = np.where(
            np.isin(deg, ["full_active", "high_active"]),
            "high",
            np.where(deg == "middle_active", "mid", "low"),
        )
        activity = rng.choice(level, size=n_u)
    else:
        activity = rng.choice(list(ACTIVITY), size=n_u, p=[0.3, 0.45, 0.25])
    fav = rng.choice(len(cats), size=(n_u, 2), p=cat_pop / cat_pop.sum())
    w = rng.random(n_u)[:, None]
    uvec = w * centroids[fav[:, 0]] + (1 - w) * centroids[fav[:, 1]] + 0.3 * rng.normal(size=(n_u, d))
    if new_ev is not None:  # some users turn out to love the new category
        fans = rng.random(n_u) < 0.3
        uvec[fans] = 0.5 * uvec[fans] + 0.8 * centroids[len(cats)]
    ids = [f"u{seed % 1000:03d}{i:06d}" for i in range(n_u)]
    users = pd.DataFrame(
        {
            "user_id": ids,
            "email": [f"{i}.{rng.integers(1e6)}@example.org" for i in ids],
            "age_band": rng.choice(AGE_BANDS, size=n_u),
            "gender": rng.choice(["f", "m", "x"], size=n_u, p=[0.48, 0.48, 0.04]),
            "region": rng.choice(REGIONS, size=n_u),
            "device": rng.choice(DEVICES, size=n_u, p=DEVICE_SHARE),
            "activity": activity,
            "signup_ts": start_ts - pd.to_timedelta(rng.integers(1, 1000, n_u), unit="D"),
        }
    )
    return World(settings, seed, start, videos, users, vvec, quality, uvec, rng.permutation(n_u))
