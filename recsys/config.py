"""Typed, frozen settings: one object, loaded once at the entry point.

Values come from (highest first) keyword arguments, environment variables with the prefix
``RECSYS_`` (nested fields use ``__``, e.g. ``RECSYS_MODEL__VARIANT=ple``), a YAML file named by
``RECSYS_CONFIG``, and the defaults below. Nothing here touches the disk or the network on import;
:func:`load_settings` only reads.

Every storage location defaults to something embedded under ``data_dir`` (a local folder, SQLite)
and is one setting away from its production form (a PostgreSQL URL, an MLflow server).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextvars import ContextVar
from datetime import date
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)
from pydantic_settings.sources.utils import parse_env_vars

from recsys import tasks

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class DriftEvent(BaseModel):
    """A change to the simulated world from a given day on."""

    model_config = _FROZEN
    day: date
    kind: Literal["preference_shift", "new_category", "popularity_shock", "upstream_nulls", "upstream_type"]
    strength: float = 1.0


class SimulatorSettings(BaseModel):
    model_config = _FROZEN
    n_users: int = 400
    n_videos: int = 500
    n_categories: int = 12
    n_authors: int = 80
    latent_dim: int = 8
    slate_size: int = 10
    sessions_per_active_user: float = 2.0
    daily_active_share: float = 0.6
    explore_share: float = 0.2
    base_click_rate: float = 0.08
    kuairand_path: Path | None = None
    drift: tuple[DriftEvent, ...] = ()


class PrivacySettings(BaseModel):
    model_config = _FROZEN
    pseudonym_key: SecretStr | None = None
    pseudonym_key_file: Path | None = None
    # Comma-separated Fernet keys, newest first (MultiFernet order); or a file with one key per line.
    encryption_keys: SecretStr | None = None
    encryption_key_file: Path | None = None
    # what an erasure does with model versions no alias points to that still hold the user: "delete" them
    # from the registry and the artifact store (default: nothing of them is left to miss), or "rewrite"
    # their artifacts in place with the user removed (keeps them for audit and manual rollback)
    erasure_old_versions: Literal["delete", "rewrite"] = "delete"


class CollectSettings(BaseModel):
    """The collect stage (:func:`recsys.data.collect.collect_day`)."""

    model_config = _FROZEN
    # landing lines parsed and written at a time: peak memory grows with it, not with the day's volume
    # (about 0.5 GB at 50,000 on the simulator's events, bench/results/pipeline_until_collect.json)
    chunk_rows: int = Field(50_000, ge=1)


class ValidationSettings(BaseModel):
    """Thresholds of the raw-events validation (:func:`recsys.data.validate.validate_events`)."""

    model_config = _FROZEN
    max_watch_multiple: float = 5.0  # watch_seconds above this x the video's duration: quarantined
    min_volume_fraction: float = 0.3  # a day below this x the trailing median of rows fails the batch
    max_quarantine_share: float = 0.5  # above this share of quarantined rows the batch fails
    # raw rows validated (GX + row rules) and written at a time: memory grows with it, not with the day.
    # Great Expectations costs a fixed ~1 CPU s per chunk (its expectation graph), so fewer chunks are
    # faster: the 1M day took 30.6 / 24.1 / 22.7 CPU s at 100k / 250k / 500k rows, peaking at 616 / 841 /
    # 1,191 MB (docs/scaling.md "Validate in chunks")
    chunk_rows: int = Field(250_000, ge=1)
    # event ids held at a time to find the day's duplicated and reused ids (one scan of the day's and the
    # window's id columns per bucket of this many ids)
    id_bucket_rows: int = Field(1_000_000, ge=1)


class FeatureSettings(BaseModel):
    model_config = _FROZEN
    window_days: int = 14
    valid_fraction: float = 0.15
    title_max_tokens: int = 8
    title_vocab_size: int = 2000
    min_count: int = 1
    # weight of the category's (author's) own rate in a user's smoothed affinity rate, in impressions:
    # small, so that a day or two of a user's evidence counts (a retrain after a drift has no more)
    affinity_strength: float = 3.0
    # positive-only sources (no non-engaged impressions): sampled negatives per positive (issue 13)
    negatives_per_positive: int = 4
    # the ranker input user_video_coengagement (recsys.features.coengagement): "auto" = for positive-only
    # sources only, where it lifts Recall@10 above item-kNN; on the simulator's logged exposures it
    # lowered held-out Recall@10 (0.0703 -> 0.0586) and true NDCG@10 (0.779 -> 0.753): docs/model.md
    coengagement: Literal["auto", "on", "off"] = "auto"
    # the features stage reads, fits and writes the window this many rows at a time (issue 15); 0: whole
    chunk_rows: int = Field(100_000, ge=0)
    # chunked: a day of the window is sorted by time in buckets of at most this many rows (an external sort,
    # recsys.features.daysort), so the sort's memory follows this number and not the day's volume
    sort_bucket_rows: int = Field(1_000_000, ge=1)


class ModelSettings(BaseModel):
    model_config = _FROZEN
    variant: Literal["mmoe", "shared_bottom", "ple"] = "mmoe"
    embedding_dim: int = 16
    shallow_units: tuple[int, ...] = (64,)
    n_experts: int = 4
    n_shared_experts: int = 2  # PLE only
    expert_units: int = 32
    tower_units: int = 16
    gate_dropout: float = 0.1
    bias_tower: bool = True
    position_dropout: float = 0.1
    # by task name; the defaults and the task names are the task spec's (recsys/tasks.py), which also
    # fills a task missing here with its default and rejects an unknown name where the weights are used
    loss_weights: dict[str, float] = Field(default_factory=lambda: tasks.loss_weights())
    score_weights: dict[str, float] = Field(default_factory=lambda: tasks.score_weights())


class TrainSettings(BaseModel):
    model_config = _FROZEN
    epochs: int = 12
    # "auto": picked from the training split's rows by recsys.train.auto_batch_size: 256 below
    # auto_batch_min_rows (every small day trains as before), above it the largest power of two up to
    # auto_batch_max that still gives an epoch auto_batch_min_steps steps. An int fixes it.
    batch_size: int | Literal["auto"] = "auto"
    # at batch 256; an "auto" batch B trains at learning_rate x sqrt(B / 256), an explicit int at this value
    learning_rate: float = Field(default=3e-3, gt=0)
    auto_batch_min_rows: int = Field(default=250_000, ge=1)
    auto_batch_min_steps: int = Field(default=160, ge=1)
    # 512, measured at 1M interactions a day (700k rows, 3 seeds, bench/results/train_scale*.json): 512 kept
    # the test quality of 256 (click AUC 0.6661 vs 0.6670, 256's range 0.6664-0.6679; GAUC 0.6485 vs
    # 0.6475); 4096 trained ~3x faster than 256 but lost 0.005 click AUC (0.6617), beyond the spread
    auto_batch_max: int = Field(default=512, ge=256)
    # XLA: "auto" keeps Keras's choice (XLA on) below batch 4096 and turns it off from there: on the 1M day
    # at 4096 its compilation made the first epoch 50 s instead of 14 and later epochs ran no faster, while
    # at 256 it made them 3.5x faster (23 s vs 80 s)
    jit_compile: bool | Literal["auto"] = "auto"
    # early stopping's patience in epochs; "auto": auto_patience_small below auto_batch_min_rows training
    # rows (every small day stops as before), auto_patience_large from there. On large days the best
    # validation loss came after the first epoch in every run measured (1M: 6 runs at batch 256, 512 and
    # 4096; 10M: 1 run), so with restore_best_weights a patience of 1 keeps the same weights as 3 and
    # stops after 2 epochs instead of 4 (docs/scaling.md "Training by data size")
    patience: int | Literal["auto"] = "auto"
    auto_patience_small: int = Field(default=3, ge=0)
    auto_patience_large: int = Field(default=1, ge=0)
    train_every_days: int = 1
    # "incremental": warm-start the ranker from the champion (vocabularies grown, old rows kept) and train
    # on the train split's last ``incremental_days`` days only (recsys/incremental.py); without a champion
    # it can extend, a full training with the reason tagged (docs/model.md "Incremental training")
    mode: Literal["full", "incremental"] = "full"
    incremental_days: int = Field(default=1, ge=1)

    @field_validator("batch_size", "patience")
    @classmethod
    def _auto_or_at_least(cls, v, info):
        low = {"batch_size": 1, "patience": 0}[info.field_name]
        if v != "auto" and v < low:
            raise ValueError(f"train.{info.field_name} must be an int >= {low} or 'auto'")
        return v


class EvaluateSettings(BaseModel):
    model_config = _FROZEN
    k: int = 10
    floor_auc: dict[str, float] = Field(default_factory=lambda: {"click": 0.55})
    max_regression: dict[str, float] = Field(default_factory=lambda: {"click": 0.01})
    min_margin_over_popularity: float = 0.0
    # When the champion itself is below popularity (+ margin) on the test day, a candidate that is too but
    # beats the champion's click AUC by at least this much passes that check: promoting it improves what
    # is served (after a drift the champion can fall far below). None: the popularity check never yields.
    min_gain_over_weak_champion: float | None = 0.02
    # simulated sources: true-utility NDCG@k over the visible catalog for at most this many test users
    truth_users: int = 200
    truth_candidates: int = 500
    # catalog ranking check: the candidate's Recall@10 must beat the best baseline's by this relative margin
    ranking_margin: float = 0.05
    # at most this many held-out users (every k-th by pseudonym: a fixed pseudo-random sample) are ranked
    # over the whole catalog for that check; 0: all. Each costs a catalog's worth of model scores for the
    # candidate and the champion: at 1M interactions a day, most of the evaluate stage (docs/scaling.md)
    ranking_users: int = Field(default=2000, ge=0)
    # With logged exposures the ranking check is recorded but advisory by default: next-day clicks follow
    # what the logging policy showed, so Recall on them favours popularity (measured on the simulator: the
    # model's true-utility NDCG@10 0.608 vs popularity's 0.516 while its Recall@10 was 0.091 vs 0.122).
    ranking_check_blocks_with_logged_exposures: bool = False
    # rows read and scored at a time (test split) or summarized (train + valid): bounds the stage's memory
    # whatever the day's size; a multiple of the ranker's predict batch (8192) keeps every row in the batch
    # it has when the split is scored whole. The figures do not depend on it (tests/unit/test_eval_chunks.py)
    chunk_rows: int = Field(default=1 << 17, ge=1)


class ServingSettings(BaseModel):
    model_config = _FROZEN
    top_n: int = 10
    n_candidates: int = 200
    max_per_author: int = 3
    max_per_category: int | None = 4  # None: no cap per category in a list
    # publish model lists for every user with an engagement in the last N days of the data (issue 13)
    active_window_days: int = 30
    parallel_scoring: bool = False  # score user shards on Dask (settings.dask_scheduler or a LocalCluster)
    users_per_shard: int = 2000
    dask_workers: int = 2  # LocalCluster size when no scheduler is set
    keep_versions: int = 5
    min_row_ratio: float = 0.5


class MonitoringSettings(BaseModel):
    model_config = _FROZEN
    pushgateway_url: str | None = None
    exporter_port: int = 8000
    exporter_addr: str = "127.0.0.1"
    quality_snapshot_path: Path | None = None  # default: data_dir/monitoring/quality.json
    ctr_drop: float = 0.2  # one day this far (relative) below the trailing baseline fires a retrain
    baseline_days: int = 3
    # a CTR drop counts only against a baseline of at least this many days with a CTR: one day is one
    # noisy figure (and a model's first day is its best, before users used up its picks)
    min_baseline_days: int = 2
    # ... and so does a smaller drop that lasts: sustained_days days in a row each more than
    # sustained_ctr_drop below the baseline of the days before the streak (0 days: rule off)
    sustained_ctr_drop: float = 0.1
    sustained_days: int = 2
    psi_threshold: float = 0.2
    max_model_age_days: int = 30
    cooldown_days: int = 3


class RelaySettings(BaseModel):
    """The Alertmanager -> Airflow relay (``recsys alerts relay``): where Airflow is, who logs in, where
    the webhook listens. ``RECSYS_RELAY__PASSWORD`` or ``RECSYS_RELAY__PASSWORD_FILE`` (not both) is
    required to run it; ``cooldown_days`` defaults to ``monitoring.cooldown_days``."""

    model_config = _FROZEN
    airflow_url: str = "http://127.0.0.1:8080"
    username: str = "admin"
    password: SecretStr | None = None
    password_file: Path | None = None
    dag_id: str = "recsys_retrain"
    host: str = "127.0.0.1"
    port: int = Field(default=8081, ge=0, le=65535)
    cooldown_days: float | None = Field(default=None, ge=0)
    timeout_seconds: float = Field(default=10.0, gt=0)

    @field_validator("airflow_url")
    @classmethod
    def _http_url_without_credentials(cls, url: str) -> str:
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        if parts.username is not None or parts.password is not None:
            raise ValueError("must not hold credentials: use relay.username and relay.password")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"must be an http(s) URL, got {url!r}")
        return url.rstrip("/")

    @model_validator(mode="after")
    def _one_password_source(self) -> RelaySettings:
        if self.password is not None and self.password.get_secret_value() and self.password_file:
            raise ValueError("set RECSYS_RELAY__PASSWORD or RECSYS_RELAY__PASSWORD_FILE, not both")
        return self


class RetrievalSettings(BaseModel):
    """The retrieval stage (``RECSYS_RETRIEVAL__*``): the two-tower model, its index and its gate."""

    model_config = _FROZEN
    enabled: bool = True  # False: candidates come from the rule pools alone
    history_len: int = 20  # engaged videos pooled in the user tower
    embedding_dim: int = 32
    output_dim: int = 32
    units: tuple[int, ...] = (64,)
    temperature: float = 0.1
    logq_correction: bool = True  # subtract log(sampling probability) from the in-batch logits
    # The three below: measured in bench/candidates.py (docs/retrieval.md): together they raise the two-tower
    # pool's Recall@200 on every seed of both the simulator and the generated MovieLens histories.
    user_id: bool = False  # the user id's own embedding in the user tower: it memorizes the few clicks
    id_l2: float = 1e-3  # L2 penalty on the user and video id embeddings
    item_bias: bool = True  # a learned per-item prior added to the logits (held in the index's last column)
    # + prior x log(1 + the video's training clicks) at search time (needs item_bias). It helps where the
    # logged exposures follow popularity (the simulator) and costs positive-only histories (MovieLens), so
    # "auto" picks the value of prior_grid with the best Recall@eval_k of the validation days' new
    # engagements (ties: the smaller); a number fixes it (docs/retrieval.md)
    popularity_prior: float | Literal["auto"] = "auto"
    prior_grid: tuple[float, ...] = Field(default=(0.0, 0.5, 1.0, 2.0, 4.0), min_length=1)
    prior_users: int = Field(default=20_000, ge=1)  # validation users (seeded sample) it is chosen on
    epochs: int = 4  # more overfit the few engagements per video here (bench/candidates.py, seed 1)
    batch_size: int = 256
    learning_rate: float = 3e-3
    k: int = 150  # two-tower candidates per user (the rule pools fill the rest of serving.n_candidates)
    fresh_quota: int = 30  # places kept for fresh uploads (the index knows no video uploaded after it)
    exact_max_items: int = 200_000  # exact matmul top-K up to this catalog size, faiss HNSW beyond
    hnsw_m: int = 32
    ef_search: int = 128
    eval_k: int = 200  # the gate's candidate Recall@K
    max_recall_regression: float = 0.0  # candidate recall may not fall more than this below the champion's

    @model_validator(mode="after")
    def _prior_needs_the_bias_column(self):
        if self.popularity_prior != "auto" and self.popularity_prior != 0 and not self.item_bias:
            raise ValueError("retrieval.popularity_prior needs retrieval.item_bias (the index's bias column)")
        return self


class S3Settings(BaseModel):
    """Where an ``s3://`` lake URL points and who signs the requests (``RECSYS_S3__*``). Unset
    credentials leave it to the S3 client's own chain (instance role, its config files)."""

    model_config = _FROZEN
    endpoint_url: str | None = None  # an S3-compatible server (SeaweedFS, MinIO); None: AWS
    region: str | None = None
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None

    @model_validator(mode="after")
    def _both_or_neither(self) -> S3Settings:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("set both RECSYS_S3__ACCESS_KEY_ID and RECSYS_S3__SECRET_ACCESS_KEY, or neither")
        return self


class Settings(BaseSettings):
    """All of recsys' configuration."""

    model_config = SettingsConfigDict(
        env_prefix="RECSYS_",
        env_nested_delimiter="__",
        frozen=True,
        extra="ignore",
        hide_input_in_errors=True,  # a bad value may be a secret (a password in a URL): never echo it
    )

    data_dir: Path = Path("data")
    # the lake's zones at a URL (s3://bucket/prefix, file:///path); None: data_dir's folders, as before
    lake_url: str | None = None
    s3: S3Settings = S3Settings()
    demo: bool = False
    seed: int = 42
    source: Literal["simulator", "landing", "kuairand", "movielens", "postgres"] = "simulator"
    source_path: Path | None = None
    # postgres source: "<SQLAlchemy URL>#<events table>[,<videos>[,<users>]]" (default: source_path)
    source_url: str | None = None
    kuairand_day: date | None = None  # the day KuaiRand's untimed logs are placed on (default 2026-01-01)
    db_url: str | None = None  # recommendations DB; default sqlite under data_dir
    mlflow_tracking_uri: str | None = None  # default sqlite under data_dir
    mlflow_artifact_root: str | None = None
    mlflow_ui_url: str = "http://localhost:5000"  # where people open MLflow (the Airflow plugin's run link)
    experiment: str = "recsys"
    model_name: str = "recsys-ranker"
    dask_scheduler: str | None = None
    lock_timeout_seconds: float = 600.0  # a second run of a (stage, day) waits this long, then fails

    simulator: SimulatorSettings = SimulatorSettings()
    privacy: PrivacySettings = PrivacySettings()
    collect: CollectSettings = CollectSettings()
    validation: ValidationSettings = ValidationSettings()
    features: FeatureSettings = FeatureSettings()
    model: ModelSettings = ModelSettings()
    train: TrainSettings = TrainSettings()
    evaluate: EvaluateSettings = EvaluateSettings()
    serving: ServingSettings = ServingSettings()
    monitoring: MonitoringSettings = MonitoringSettings()
    relay: RelaySettings = RelaySettings()
    retrieval: RetrievalSettings = RetrievalSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        environ = _ENVIRON.get()
        if environ is not None:  # settings_from_env: another process's environment
            env_settings = _MappingEnvSource(settings_cls)
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        yaml_file = (os.environ if environ is None else environ).get("RECSYS_CONFIG")
        if yaml_file:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file))
        return tuple(sources)

    # Derived locations (pure; nothing is created here).
    @property
    def resolved_db_url(self) -> str:
        return self.db_url or f"sqlite:///{(self.data_dir / 'recsys.db').resolve()}"

    @property
    def resolved_tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{(self.data_dir / 'mlflow' / 'mlflow.db').resolve()}"

    @property
    def resolved_artifact_root(self) -> str:
        if self.mlflow_artifact_root:
            return self.mlflow_artifact_root
        return (self.data_dir / "mlflow" / "artifacts").resolve().as_uri()


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment (and ``RECSYS_CONFIG``), with keyword overrides on top."""
    return Settings(**overrides)


_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("recsys_environ", default=None)


class _MappingEnvSource(EnvSettingsSource):
    """Environment variables from the mapping :func:`settings_from_env` was given, not this process's."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(_ENVIRON.get() or {}, False, self.env_ignore_empty, self.env_parse_none_str)


def settings_from_env(env: Mapping[str, str], **overrides: Any) -> Settings:
    """The settings a process started with environment ``env`` would load (e.g. the DAG runs a driver
    starts in a subprocess with its own ``RECSYS_*`` variables)."""
    token = _ENVIRON.set(env)
    try:
        return Settings(**overrides)
    finally:
        _ENVIRON.reset(token)


def environment() -> dict[str, str]:
    """A copy of this process's environment, to hand to a subprocess (and to :func:`settings_from_env`)."""
    return dict(os.environ)
