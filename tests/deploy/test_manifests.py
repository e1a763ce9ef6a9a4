"""The rendered Kubernetes manifests have the properties users and operators rely on."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from deploy_support import (
    K8S_DIR,
    OVERLAYS,
    REPO_ROOT,
    containers,
    find,
    pod_spec,
    workloads,
)
from google.protobuf import text_format

MODEL_STATUS_PATH = "/v1/models/mnist"


def serving_container(objects: list[dict]) -> dict:
    (container,) = pod_spec(find(objects, "Deployment", "tf-serving"))["containers"]
    return container


def flag_values(container: dict) -> dict[str, str]:
    return dict(arg.removeprefix("--").split("=", 1) for arg in container["args"] if "=" in arg)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_serving_ports_and_service(rendered, overlay):
    objects = rendered[overlay]
    container = serving_container(objects)
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"grpc": 8500, "http": 8501}
    flags = flag_values(container)
    assert (flags["port"], flags["rest_api_port"]) == ("8500", "8501")

    service = find(objects, "Service", "tf-serving")
    service_ports = {port["port"]: port["targetPort"] for port in service["spec"]["ports"]}
    assert service_ports == {8500: "grpc", 8501: "http"}
    pod_labels = find(objects, "Deployment", "tf-serving")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_require_an_available_model(rendered, overlay):
    container = serving_container(rendered[overlay])
    for probe_name in ("startupProbe", "readinessProbe"):
        probe = container[probe_name]["httpGet"]
        # .../metadata answers 200 only once a version is AVAILABLE (see the Deployment's
        # comment); the bare status path would also answer 200 while LOADING.
        assert probe["path"] == MODEL_STATUS_PATH + "/metadata", probe_name
        assert probe["port"] in ("http", 8501), probe_name
    # Liveness must not depend on the model, or a bad version would restart every replica.
    liveness = container["livenessProbe"]
    assert "httpGet" not in liveness or MODEL_STATUS_PATH not in liveness["httpGet"]["path"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_serving_uses_the_config_files_it_mounts(rendered, overlay):
    objects = rendered[overlay]
    container = serving_container(objects)
    flags = flag_values(container)
    volumes = {
        volume["name"]: volume
        for volume in pod_spec(find(objects, "Deployment", "tf-serving"))["volumes"]
    }
    config_mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/etc/tf-serving")
    config_map_name = volumes[config_mount["name"]]["configMap"]["name"]
    config_map = find(objects, "ConfigMap", config_map_name)
    for flag in ("model_config_file", "batching_parameters_file", "monitoring_config_file"):
        directory, _, file_name = flags[flag].rpartition("/")
        assert directory == "/etc/tf-serving"
        assert file_name in config_map["data"], flag
    assert flags["enable_batching"] == "true"
    assert flags["enable_model_warmup"] == "true"


def test_config_map_model_config_matches_serving(rendered):
    from tensorflow_serving.config import model_server_config_pb2

    def parse(text: str):
        return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())

    original = parse((REPO_ROOT / "serving" / "models.config").read_text())
    config_map = next(obj for obj in rendered["cpu"] if obj["kind"] == "ConfigMap")
    in_cluster = parse(config_map["data"]["models.config"])
    (model,) = in_cluster.model_config_list.config
    # The claim is mounted at /models in the serving pods.
    assert model.base_path == f"/models/{model.name}"
    assert set(model.version_labels) == {"stable", "canary"}
    # Label targets are rollout state and may differ; everything else may not.
    for config in (original, in_cluster):
        for entry in config.model_config_list.config:
            for label in entry.version_labels:
                entry.version_labels[label] = 0
    assert in_cluster == original


def test_prometheus_annotations_match_monitoring_config(rendered):
    deployment = find(rendered["cpu"], "Deployment", "tf-serving")
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    monitoring = (REPO_ROOT / "serving" / "monitoring.config").read_text()
    path = re.search(r'path:\s*"([^"]+)"', monitoring).group(1)
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == path
    assert annotations["prometheus.io/port"] == "8501"


def test_gpu_resources_only_in_the_gpu_overlay(rendered):
    gpu_train = pod_spec(find(rendered["gpu"], "Job", "train"))
    (trainer,) = gpu_train["containers"]
    assert trainer["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert any(t["key"] == "nvidia.com/gpu" for t in gpu_train["tolerations"])
    assert gpu_train["nodeSelector"]

    cpu_text = yaml.safe_dump_all(rendered["cpu"])
    assert "nvidia.com/gpu" not in cpu_text
    for workload in workloads(rendered["cpu"]):
        assert "tolerations" not in pod_spec(workload), workload["metadata"]["name"]
    # Nothing but training asks for a GPU in the GPU overlay either.
    for workload in workloads(rendered["gpu"]):
        if workload["metadata"]["name"] != "train":
            assert "nvidia.com/gpu" not in yaml.safe_dump(workload)


def test_overlays_differ_only_in_the_training_job(rendered):
    def others(objects):
        return [
            obj for obj in objects if (obj["kind"], obj["metadata"]["name"]) != ("Job", "train")
        ]

    assert others(rendered["cpu"]) == others(rendered["gpu"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_images_are_pinned_to_the_project_versions(
    rendered, overlay, tensorflow_version, pyproject
):
    images = {
        container["image"]
        for workload in workloads(rendered[overlay])
        for container in containers(workload)
    }
    project_version = pyproject["project"]["version"]
    assert images == {
        f"tensorflow/serving:{tensorflow_version}",
        f"digits-serving/trainer:{project_version}",
        f"digits-serving/client:{project_version}",
    }


def test_dockerfiles_and_makefile_use_the_same_pins(tensorflow_version, pyproject):
    gpu = (REPO_ROOT / "Dockerfile.gpu").read_text()
    assert f"ARG BASE_IMAGE=tensorflow/tensorflow:{tensorflow_version}-gpu" in gpu
    assert 'ENTRYPOINT ["python", "-m", "trainer"]' in gpu
    client = (REPO_ROOT / "Dockerfile.client").read_text()
    assert 'ENTRYPOINT ["python", "-m", "client"]' in client
    for dockerfile in (gpu, client):
        # Only the final stage's user matters: the last USER must be a non-root uid.
        user = re.findall(r"^USER\s+(\S+)", dockerfile, re.MULTILINE)[-1]
        assert user.split(":")[0] not in ("0", "root")
        assert "--constraint constraints.txt" in dockerfile
    assert '".[train]"' in gpu and '".[client]"' in client
    makefile = (REPO_ROOT / "Makefile").read_text()
    version = pyproject["project"]["version"]
    assert f"TRAINER_IMAGE ?= digits-serving/trainer:{version}" in makefile
    assert f"CLIENT_IMAGE ?= digits-serving/client:{version}" in makefile
    compose = yaml.safe_load((REPO_ROOT / "serving" / "compose.yaml").read_text())
    assert compose["services"]["tf-serving"]["image"] == f"tensorflow/serving:{tensorflow_version}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_is_locked_down(rendered, overlay):
    for workload in workloads(rendered[overlay]):
        spec = pod_spec(workload)
        pod_security = spec["securityContext"]
        assert pod_security["runAsNonRoot"] is True
        assert pod_security["runAsUser"] != 0
        assert pod_security["seccompProfile"]["type"] == "RuntimeDefault"
        assert spec["automountServiceAccountToken"] is False
        for container in containers(workload):
            where = f"{workload['metadata']['name']}/{container['name']}"
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["capabilities"]["drop"] == ["ALL"], where
            assert "add" not in security["capabilities"], where
            resources = container["resources"]
            assert {"cpu", "memory"} <= resources["requests"].keys(), where
            assert {"cpu", "memory"} <= resources["limits"].keys(), where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_model_repository_claim_is_shared_and_read_only_in_serving(rendered, overlay):
    objects = rendered[overlay]
    claim = find(objects, "PersistentVolumeClaim", "models")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]

    def mount_of_claim(workload_kind, name):
        spec = pod_spec(find(objects, workload_kind, name))
        (volume,) = [
            v
            for v in spec["volumes"]
            if v.get("persistentVolumeClaim", {}).get("claimName") == "models"
        ]
        (mount,) = [
            m for c in spec["containers"] for m in c["volumeMounts"] if m["name"] == volume["name"]
        ]
        return volume, mount

    volume, mount = mount_of_claim("Deployment", "tf-serving")
    assert mount["mountPath"] == "/models"
    assert mount["readOnly"] is True
    assert volume["persistentVolumeClaim"]["readOnly"] is True

    volume, mount = mount_of_claim("Job", "train")
    assert mount["mountPath"] == "/models"
    assert not mount.get("readOnly")
    (trainer,) = pod_spec(find(objects, "Job", "train"))["containers"]
    assert "--model-repo=/models" in trainer["args"]
    assert "--model-name=mnist" in trainer["args"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_batch_scoring_is_an_indexed_job_over_shards(rendered, overlay):
    objects = rendered[overlay]
    job = find(objects, "Job", "score")
    assert job["spec"]["completionMode"] == "Indexed"
    # Created suspended: its input claim is empty until the user fills it.
    assert job["spec"]["suspend"] is True
    shards = job["spec"]["completions"]
    assert shards >= 2
    assert job["spec"]["parallelism"] == shards
    (container,) = pod_spec(job)["containers"]
    assert container["command"] == ["python", "-m", "client"]
    args = container["args"]
    assert args[:2] == ["score", "/data/in"]
    assert f"--shard=$(JOB_COMPLETION_INDEX)/{shards}" in args
    assert "--out=/results/preds-$(JOB_COMPLETION_INDEX).csv" in args
    assert "--server=grpc://tf-serving:8500" in args
    # Batch results come from the promoted version, never from a canary that is merely newest;
    # the init container waits for that same version.
    assert "--label=stable" in args
    (wait,) = pod_spec(job)["initContainers"]
    assert wait["args"][0] == "wait" and "--label=stable" in wait["args"]
    # $(VAR) in args expands only for variables declared in the container's env.
    assert any(env["name"] == "JOB_COMPLETION_INDEX" for env in container["env"])
    mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
    assert mounts["/data/in"]["readOnly"] is True
    assert not mounts["/results"].get("readOnly")
    volumes = {volume["name"]: volume for volume in pod_spec(job)["volumes"]}
    results_claim = volumes[mounts["/results"]["name"]]["persistentVolumeClaim"]["claimName"]
    assert find(objects, "PersistentVolumeClaim", results_claim)["spec"]["accessModes"] == [
        "ReadWriteMany"
    ]
    # The server it talks to is the Service's gRPC port.
    service = find(objects, "Service", "tf-serving")
    assert 8500 in [port["port"] for port in service["spec"]["ports"]]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_autoscaler_budget_and_network_policy_target_serving(rendered, overlay):
    objects = rendered[overlay]
    pod_labels = find(objects, "Deployment", "tf-serving")["spec"]["template"]["metadata"]["labels"]
    hpa = find(objects, "HorizontalPodAutoscaler", "tf-serving")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "tf-serving",
    }
    assert 1 < hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    pdb = find(objects, "PodDisruptionBudget", "tf-serving")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]

    policy = find(objects, "NetworkPolicy", "tf-serving")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    ports = sorted(
        (p["port"], p["protocol"]) for rule in policy["spec"]["ingress"] for p in rule["ports"]
    )
    assert ports == [(8500, "TCP"), (8501, "TCP")]
    deny = find(objects, "NetworkPolicy", "default-deny-ingress")
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}


def test_everything_lands_in_one_namespace(rendered):
    for overlay, objects in rendered.items():
        namespaces = {
            obj["metadata"].get("namespace") for obj in objects if obj["kind"] != "Namespace"
        }
        (namespace,) = [obj["metadata"]["name"] for obj in objects if obj["kind"] == "Namespace"]
        assert namespaces == {namespace}, overlay


def kustomizations() -> list[Path]:
    return sorted(K8S_DIR.rglob("kustomization.yaml"))


@pytest.mark.parametrize("path", kustomizations(), ids=lambda p: str(p.relative_to(K8S_DIR)))
def test_kustomizations_follow_the_house_style(path):
    text = path.read_text()
    config = yaml.safe_load(text)
    assert "commonLabels" not in config
    # Every overlay and component opens with a comment that says why it exists.
    assert text.startswith("# ")
    if "/overlays/" in str(path):
        assert "Why this overlay" in text.splitlines()[0]
        assert set(config) <= {"apiVersion", "kind", "resources", "patches", "images", "components"}
    for resource in config.get("resources", []):
        if resource.endswith(".yaml"):
            documents = [
                doc for doc in yaml.safe_load_all((path.parent / resource).read_text()) if doc
            ]
            assert len(documents) == 1, f"{resource}: one resource per file"
