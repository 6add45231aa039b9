"""Which data a training run learned from, recorded as MLflow run inputs (``mlflow.log_input``).

Each split of a features folder (train, valid, test) is logged as a metadata-only dataset: its source
(the Parquet file's path or URL), a content digest (SHA-256 of the file, so two runs on the same bytes
show the same digest) and its row count (from the Parquet footer). Nothing is loaded into memory: the
frames can be larger than the training process holds at once. The MLflow UI lists them on the run's
page, and ``mlflow.get_run(run_id).inputs.dataset_inputs`` returns them.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

SPLIT_CONTEXT = {"train": "training", "valid": "validation", "test": "test"}
DIGEST_CHARS = 16
CHUNK = 1 << 20


def file_digest(path: Path) -> str:
    """SHA-256 of the file's bytes, read in chunks; the first :data:`DIGEST_CHARS` hex characters."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()[:DIGEST_CHARS]


def _dataset_class():
    from mlflow.data.meta_dataset import MetaDataset

    class ParquetSplit(MetaDataset):
        """A metadata-only dataset that also reports its row count as the profile."""

        def __init__(self, source, name: str, digest: str, rows: int):
            self._rows = int(rows)
            super().__init__(source=source, name=name, digest=digest)

        @property
        def profile(self):
            return {"num_rows": self._rows}

        def to_dict(self) -> dict[str, str]:
            return {**super().to_dict(), "profile": json.dumps(self.profile)}

    return ParquetSplit


def split_datasets(features_dir: Path, name_prefix: str = "features") -> list[tuple[object, str, int]]:
    """(dataset, context, rows) for each split file of ``features_dir`` that exists."""
    import pyarrow.parquet as pq
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    cls = _dataset_class()
    out = []
    for split, context in SPLIT_CONTEXT.items():
        path = Path(features_dir) / f"{split}.parquet"
        if not path.exists():
            continue
        rows = pq.ParquetFile(path).metadata.num_rows
        with warnings.catch_warnings():  # a local path resolves to equivalent local source classes
            warnings.filterwarnings("ignore", message=".*interpreted in multiple ways.*")
            source = resolve_dataset_source(str(path.resolve()))
        out.append((cls(source, f"{name_prefix}-{split}", file_digest(path), rows), context, rows))
    return out


def log_feature_datasets(features_dir: Path, name_prefix: str = "features") -> list[dict]:
    """Log the splits of ``features_dir`` as inputs of the active MLflow run (context training /
    validation / test, tag ``rows``); returns what was logged (name, context, digest, rows)."""
    import mlflow

    logged = []
    for dataset, context, rows in split_datasets(features_dir, name_prefix):
        mlflow.log_input(dataset, context=context, tags={"rows": str(rows)})
        logged.append({"name": dataset.name, "context": context, "digest": dataset.digest, "rows": rows})
    return logged
