"""deploy/k8s validates offline against the Kubernetes schemas, and its parts fit together.

No cluster runs here (docs/scaling.md says so): `kubernetes-validate` checks every manifest against the
OpenAPI schemas of a recent Kubernetes release in strict mode (unknown fields are errors), and the tests
below check what a schema cannot: names that refer to each other resolve.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
KUBERNETES_VERSION = "1.33"


def _docs() -> list[tuple[str, dict]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = [*kustomization["resources"], "pod-template.yaml"]
    return [(f, doc) for f in files for doc in yaml.safe_load_all((K8S / f).read_text()) if doc]


DOCS = _docs()


def _pod_specs() -> list[tuple[str, dict]]:
    specs = []
    for _, doc in DOCS:
        if doc["kind"] == "Pod":
            specs.append((doc["metadata"]["name"], doc["spec"]))
        elif doc["kind"] in ("Deployment", "Job", "StatefulSet"):
            specs.append((doc["metadata"]["name"], doc["spec"]["template"]["spec"]))
    return specs


def test_every_file_of_the_kustomization_exists_and_nothing_is_left_out():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"]) | {
        f["files"][0].split("=")[1] for f in kustomization["configMapGenerator"]
    }
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}


@pytest.mark.parametrize(
    ("name", "doc"), DOCS, ids=[f"{f}:{d['kind']}/{d['metadata']['name']}" for f, d in DOCS]
)
def test_manifest_is_valid_against_the_kubernetes_schema(name, doc):
    import kubernetes_validate

    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_schema_validation_catches_a_broken_manifest():
    import kubernetes_validate
    from kubernetes_validate.utils import ValidationError

    pod = next(doc for _, doc in DOCS if doc["kind"] == "Pod")
    broken = {
        **pod,
        "spec": {**pod["spec"], "containers": [{**pod["spec"]["containers"][0], "imagePullPolicy": 3}]},
    }
    with pytest.raises(ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_the_executor_pod_template_runs_the_project_image_in_a_container_named_base():
    config = next(
        d for _, d in DOCS if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "recsys-config"
    )["data"]
    assert config["AIRFLOW__CORE__EXECUTOR"] == "KubernetesExecutor"
    template_path = Path(config["AIRFLOW__KUBERNETES_EXECUTOR__POD_TEMPLATE_FILE"])
    scheduler = next(spec for name, spec in _pod_specs() if name == "airflow-scheduler")
    (mount,) = [m for m in scheduler["containers"][0]["volumeMounts"] if m["name"] == "pod-template"]
    assert template_path.parent == Path(mount["mountPath"])
    (volume,) = [v for v in scheduler["volumes"] if v["name"] == "pod-template"]
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    (generated,) = [
        g for g in kustomization["configMapGenerator"] if g["name"] == volume["configMap"]["name"]
    ]
    assert generated["files"] == [f"{template_path.name}=pod-template.yaml"]
    pod = yaml.safe_load((K8S / "pod-template.yaml").read_text())
    assert [c["name"] for c in pod["spec"]["containers"]] == ["base"]


def test_every_reference_between_manifests_resolves():
    names = {(d["kind"], d["metadata"]["name"]) for _, d in DOCS}
    for pod, spec in _pod_specs():
        if "serviceAccountName" in spec:
            assert ("ServiceAccount", spec["serviceAccountName"]) in names, pod
        for volume in spec.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                assert ("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]) in names, pod
        for container in spec["containers"]:
            assert container["image"] == "recsys", (
                pod,
                container["image"],
            )  # rewritten by kustomize `images`
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert ("ConfigMap", source["configMapRef"]["name"]) in names, pod
    labels = [d["spec"]["template"]["metadata"]["labels"] for _, d in DOCS if d["kind"] == "Deployment"]
    for _, service in (x for x in DOCS if x[1]["kind"] == "Service"):
        selector = service["spec"]["selector"]
        assert any(selector.items() <= lab.items() for lab in labels), service["metadata"]["name"]


def test_settings_match_the_compose_stack_names():
    """The cluster reads the same setting names as docker-compose.yaml: one configuration vocabulary."""
    compose = (K8S.parents[1] / "docker-compose.yaml").read_text()
    config = next(
        d for _, d in DOCS if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "recsys-config"
    )["data"]
    for key in config:
        if key.startswith("RECSYS_") and key != "RECSYS_DASK_SCHEDULER":
            assert key in compose, key


def test_the_kubernetes_executor_reads_the_pod_template():
    """The provider's own parser (what the executor runs on the file) gives the pod the tests above check."""
    from airflow.providers.cncf.kubernetes.pod_generator import PodGenerator

    pod = PodGenerator.deserialize_model_file(str(K8S / "pod-template.yaml"))
    (container,) = pod.spec.containers
    assert container.name == "base"
    assert {m.mount_path for m in container.volume_mounts} == {"/opt/recsys/data"}
    assert [s.config_map_ref.name for s in container.env_from if s.config_map_ref] == ["recsys-config"]
