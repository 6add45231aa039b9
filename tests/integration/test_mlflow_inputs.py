"""MLflow after a short pipeline run (the session's ``pipeline_run``): every training run lists the
train/valid/test datasets it learned from (source, digest, rows), the model has one variant tag, and a
version the gate did not promote is the ``challenger``."""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2700)]  # the session pipeline run counts here


@pytest.fixture(scope="module")
def client(pipeline_run):
    import mlflow

    from recsys.tracking import configure

    configure(pipeline_run.settings())
    return mlflow.MlflowClient()


def test_training_runs_list_their_datasets(pipeline_run, client):
    import pyarrow.parquet as pq

    from recsys.lineage import file_digest

    data = pipeline_run.data_dir
    trained = sorted((data / "reports" / "runs").glob("ds=*/train.json"))
    assert trained, "the pipeline run trained no model"
    for path in trained:
        ds = path.parent.name[3:]
        run = client.get_run(json.loads(path.read_text())["run_id"])
        inputs = {
            d.dataset.name: (d.dataset, {t.key: t.value for t in d.tags}) for d in run.inputs.dataset_inputs
        }
        assert set(inputs) == {"features-train", "features-valid", "features-test"}, ds
        for split, context in (("train", "training"), ("valid", "validation"), ("test", "test")):
            dataset, tags = inputs[f"features-{split}"]
            parquet = data / "features" / "examples" / f"ds={ds}" / f"{split}.parquet"
            rows = pq.ParquetFile(parquet).metadata.num_rows
            assert tags["mlflow.data.context"] == context and tags["rows"] == str(rows)
            assert json.loads(dataset.profile) == {"num_rows": rows}
            assert json.loads(dataset.source)["uri"] == str(parquet.resolve())
            assert dataset.digest == file_digest(parquet)
        assert "model_variant" not in run.data.tags and run.data.tags["variant"] == "mmoe"


def test_gated_but_not_promoted_versions_are_the_challenger(pipeline_run, client):
    settings = pipeline_run.settings()
    versions = client.search_model_versions(f"name='{settings.model_name}'")
    refused = sorted((int(v.version) for v in versions if v.tags.get("blessed") == "false"), reverse=True)
    aliases = {k: str(v) for k, v in client.get_registered_model(settings.model_name).aliases.items()}
    if refused:
        assert aliases.get("challenger") == str(refused[0])
    else:
        assert "challenger" not in aliases
    assert aliases["champion"] not in {str(v) for v in refused}
