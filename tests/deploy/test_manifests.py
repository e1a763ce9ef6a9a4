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
    for flag in ("batching_parameters_file", "monitoring_config_file"):
        directory, _, file_name = flags[flag].rpartition("/")
        assert directory == "/etc/tf-serving"
        assert file_name in config_map["data"], flag
    assert flags["enable_batching"] == "true"
    assert flags["enable_model_warmup"] == "true"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_serving_reads_the_rollout_state_from_the_model_claim(rendered, overlay):
    """Moving a label is a write to the claim that every replica polls, not a Deployment roll:
    no ConfigMap holds a model config, and the pods wait for the first publish to write it."""
    objects = rendered[overlay]
    container = serving_container(objects)
    flags = flag_values(container)
    models_mount = next(m for m in container["volumeMounts"] if m["name"] == "models")
    assert flags["model_config_file"] == f"{models_mount['mountPath']}/models.config"
    assert 0 < int(flags["model_config_file_poll_wait_seconds"]) <= 60
    assert flags["allow_version_labels_for_unavailable_models"] == "true"
    for config_map in (obj for obj in objects if obj["kind"] == "ConfigMap"):
        assert "models.config" not in config_map.get("data", {})
    (wait,) = pod_spec(find(objects, "Deployment", "tf-serving"))["initContainers"]
    assert "/models/models.config" in " ".join(wait["command"])
    assert {"name": "models", "mountPath": "/models", "readOnly": True} in wait["volumeMounts"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rollout_jobs_write_the_model_claim_and_ask_every_replica(rendered, overlay):
    objects = rendered[overlay]
    cronjob = find(objects, "CronJob", "rollout")
    assert cronjob["spec"]["suspend"] is True  # a template: scripts/k8s_rollout.py runs steps
    spec = pod_spec(cronjob)
    (container,) = spec["containers"]
    assert container["command"] == ["python", "-m", "client"]
    assert container["args"][0] == "rollout"
    env = {item["name"]: item["value"] for item in container["env"]}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"]
              if "persistentVolumeClaim" in v}  # fmt: skip
    models = next(name for name, claim in claims.items() if claim == "models")
    assert env["MODEL_REPO"] == mounts[models]["mountPath"] == "/models"
    assert not mounts[models].get("readOnly")
    # The rollout waits for each replica: the headless Service resolves to every pod.
    replicas = find(objects, "Service", "tf-serving-replicas")
    assert replicas["spec"]["clusterIP"] == "None"
    pod_labels = find(objects, "Deployment", "tf-serving")["spec"]["template"]["metadata"]["labels"]
    assert replicas["spec"]["selector"].items() <= pod_labels.items()
    assert env["TFS_SERVER"] == "grpc://tf-serving-replicas:8500"
    assert env["TFS_EACH_ADDRESS"] == "true"
    # Its reports land on the results claim, its images come from the input claim.
    results = next(name for name, claim in claims.items() if claim == "score-results")
    assert env["ROLLOUT_REPORT_DIR"].startswith(mounts[results]["mountPath"] + "/")


def test_a_rollout_step_is_a_job_from_the_cronjobs_template(rendered):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "k8s_rollout", REPO_ROOT / "scripts" / "k8s_rollout.py"
    )
    k8s_rollout = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(k8s_rollout)
    cronjob = find(rendered["cpu"], "CronJob", "rollout")
    job = k8s_rollout.job_from_cronjob(cronjob, ["canary", "3"], "rollout-canary-1")
    assert (job["kind"], job["metadata"]["name"]) == ("Job", "rollout-canary-1")
    assert job["metadata"]["namespace"] == "digits-serving"
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["rollout", "canary", "3"]
    # Everything else is the template's, and the template itself is left as it was.
    assert job["spec"]["template"]["spec"]["volumes"] == pod_spec(cronjob)["volumes"]
    assert pod_spec(cronjob)["containers"][0]["args"] == ["rollout", "status"]
    assert k8s_rollout.job_name(["promote", "/data/in"]).startswith("rollout-promote-")


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
