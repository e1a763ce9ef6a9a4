"""Helpers for the deployment tests: paths, rendering, and walking rendered objects."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
K8S_DIR = REPO_ROOT / "k8s"
KUBECTL = REPO_ROOT / ".venv" / "bin" / "kubectl"
OVERLAYS = ("cpu", "gpu")
# Kinds whose pod template the tests inspect.
WORKLOAD_KINDS = ("Deployment", "Job", "StatefulSet", "DaemonSet", "CronJob")


def render(overlay_dir: Path) -> list[dict]:
    result = subprocess.run(
        [str(KUBECTL), "kustomize", str(overlay_dir)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"kubectl kustomize {overlay_dir} failed: {result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def find(objects: list[dict], kind: str, name: str) -> dict:
    for obj in objects:
        if obj["kind"] == kind and obj["metadata"]["name"] == name:
            return obj
    raise LookupError(
        f"no {kind}/{name} among {[o['kind'] + '/' + o['metadata']['name'] for o in objects]}"
    )


def pod_spec(workload: dict) -> dict:
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["spec"]


def workloads(objects: list[dict]) -> Iterator[dict]:
    return (obj for obj in objects if obj["kind"] in WORKLOAD_KINDS)


def containers(workload: dict) -> list[dict]:
    spec = pod_spec(workload)
    return spec.get("initContainers", []) + spec["containers"]
