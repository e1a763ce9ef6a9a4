"""The whole rollout on the local server with tiny real models (issue 10's acceptance test).

Publish v1 (the first publish starts models.config: stable and canary on 1), publish v2 and v3
while a client keeps asking for `--label stable`, `rollout canary 3`, a `rollout promote` whose
gate fails (nothing moves, exit 3, the report says why), one that passes, `rollout rollback`.
Not one `stable` request may fail while versions come and go.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from harness import local_server, run_python

from common import rollout_state
from trainer import publish

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MODEL = "mnist"


class StableTraffic:
    """REST predict requests on label stable, back to back, counting failures and versions."""

    def __init__(self, rest_url: str) -> None:
        body = {"signature_name": "serving_default", "instances": [[[[0]] * 28] * 28]}
        self._request = json.dumps(body).encode()
        self._url = f"{rest_url}/v1/models/{MODEL}/labels/stable:predict"
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            request = urllib.request.Request(
                self._url, self._request, {"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as reply:
                    json.loads(reply.read())
                self.ok += 1
            except (urllib.error.URLError, OSError, ValueError) as error:
                detail = error.read().decode() if isinstance(error, urllib.error.HTTPError) else ""
                self.failures.append(f"{error} {detail}".strip())
            time.sleep(0.02)

    def __enter__(self) -> StableTraffic:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


def rest_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return json.loads(reply.read())


def rollout(repo: Path, server, *args: str):
    return run_python(
        "-m", "client", "rollout", *args, "--model-repo", str(repo),
        "--server", server.rest_url, timeout=300,
    )  # fmt: skip


def labels_and_pins(repo: Path) -> tuple[dict[str, int], tuple[int, ...]]:
    entry = rollout_state.read(repo).model(MODEL)
    return entry.labels, entry.pins


def test_publish_canary_promote_rollback(
    built_versions: Path, labelled_folder: Path, tmp_path: Path
) -> None:
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    from serving.config import read_model_config_file

    repo = tmp_path / "models"

    def publish_next(version: int) -> int:
        source = built_versions / str(version)
        published = publish.publish(
            repo / MODEL, write=lambda folder: shutil.copytree(source, folder, dirs_exist_ok=True)
        )
        return published.version

    assert publish_next(1) == 1
    assert labels_and_pins(repo) == ({"canary": 1, "stable": 1}, (1,))
    config = repo / "models.config"
    flags = [
        f"--model_config_file={config}",
        "--model_config_file_poll_wait_seconds=1",
        "--file_system_poll_wait_seconds=1",
        "--allow_version_labels_for_unavailable_models=true",
    ]
    with (
        local_server(*flags, log_dir=tmp_path, model_name=MODEL) as server,
        StableTraffic(server.rest_url) as traffic,
    ):
        # Publishing loads nothing: only pinned versions are served.
        assert publish_next(2) == 2 and publish_next(3) == 3
        time.sleep(2.5)  # two file-system polls
        states = rest_json(f"{server.rest_url}/v1/models/{MODEL}")["model_version_status"]
        assert [(s["version"], s["state"]) for s in states] == [("1", "AVAILABLE")]

        result = rollout(repo, server, "canary", "3", "--timeout", "60")
        assert result.returncode == 0, result.stderr
        assert "canary: 1 -> 3" in result.stdout
        assert labels_and_pins(repo) == ({"canary": 3, "stable": 1}, (1, 3))
        canary = rest_json(f"{server.rest_url}/v1/models/{MODEL}/labels/canary/metadata")
        assert canary["model_spec"]["version"] == "3"

        status = rollout(repo, server, "status", "--json")
        assert status.returncode == 0, status.stderr
        document = json.loads(status.stdout)
        assert document["on_disk"] == [1, 2, 3] and document["pins"] == [1, 3]
        (view,) = document["servers"]
        assert view["versions"] == {"1": "AVAILABLE", "3": "AVAILABLE"}
        assert view["labels"] == {"stable": 1, "canary": 3}

        # A gate that cannot pass: nothing moves, exit 3, the report says why.
        before = config.read_text()

        def promote(report: str, *thresholds: str):
            return rollout(repo, server, "promote", str(labelled_folder), "--report-dir",
                           str(tmp_path / report), *thresholds, "--timeout", "60")  # fmt: skip

        failed = promote("refused", "--min-delta", "0.9")
        assert failed.returncode == 3, failed.stderr
        assert "gate failed, stable stays on version 1" in failed.stderr
        assert "below --min-delta +0.9" in failed.stderr
        assert config.read_text() == before
        report = json.loads((tmp_path / "refused" / "report.json").read_text())
        assert report["passed"] is False and "--min-delta" in report["reasons"][0]
        assert report["stable"]["images"] == report["canary"]["images"] == 300
        assert "Gate failed" in (tmp_path / "refused" / "report.md").read_text()

        # Version 3 trained, version 1 did not: the default gate (not worse, no significant
        # loss) passes once the per-class tolerance lets the untrained model's favourite class
        # go down.
        passed = promote("promoted", "--max-regression", "1")
        assert passed.returncode == 0, passed.stderr
        assert "promoted: stable 1 -> 3" in passed.stdout
        report = json.loads((tmp_path / "promoted" / "report.json").read_text())
        assert report["passed"] is True and report["delta"] > 0
        assert report["mcnemar"]["canary_only"] > report["mcnemar"]["stable_only"]
        # Version 1 stays pinned, the rollback target.
        assert labels_and_pins(repo) == ({"canary": 3, "stable": 3}, (1, 3))
        stable = rest_json(f"{server.rest_url}/v1/models/{MODEL}/labels/stable/metadata")
        assert stable["model_spec"]["version"] == "3"

        back = rollout(repo, server, "rollback", "--timeout", "60")
        assert back.returncode == 0, back.stderr
        assert "rolled back: canary, stable 3 -> 1" in back.stdout
        assert labels_and_pins(repo) == ({"canary": 1, "stable": 1}, (1,))
        stable = rest_json(f"{server.rest_url}/v1/models/{MODEL}/labels/stable/metadata")
        assert stable["model_spec"]["version"] == "1"
        time.sleep(1.0)  # a few more requests after the last move
    assert traffic.failures == []
    assert traffic.ok > 20

    # The file every step wrote is TF Serving's own ModelServerConfig, and the local server's
    # reader agrees with the rollout's.
    text = config.read_text()
    proto = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    (model,) = proto.model_config_list.config
    assert list(model.model_version_policy.specific.versions) == [1]
    (served,) = read_model_config_file(config)
    assert served.labels == {"canary": 1, "stable": 1}
    history = [(h.label, h.old, h.new, h.step) for h in rollout_state.parse(text).history]
    assert history[-3:] == [("stable", 1, 3, "promote"), ("canary", 3, 1, "rollback"),
                            ("stable", 3, 1, "rollback")]  # fmt: skip
