"""Behaviour that needs control of the server: the compose command line, label rollouts by
HandleReloadConfigRequest and by the config poll, hot swap to a new version, a broken version.

Runs on its own local server over a copy of the repository (skipped against an external
target). Tests run in file order and build on each other's state.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import yaml
from conformance_support import (
    DT_UINT8,
    MODEL,
    STOCK_CONFIG_DIR,
    TOLERANCE,
    Expectations,
    assert_rest_error,
    assert_rpc_error,
    external_target,
    packed_tensor,
    to_numpy,
    wait_for_versions,
)
from harness import local_server
from make_repository import model_config_text

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TIMEOUT = 60
POLL_SECONDS = 1


def compose_flags(config_file: Path) -> list[str]:
    """serving/compose.yaml's command with container paths mapped to this checkout.

    /config/* is this repository's serving/ folder; models.config (whose base path only exists
    in the container) is replaced by `config_file`; polls are shortened so tests wait seconds.
    """
    compose = yaml.safe_load((STOCK_CONFIG_DIR / "compose.yaml").read_text())
    (service,) = compose["services"].values()
    flags = []
    for argument in service["command"]:
        name, _, value = argument.partition("=")
        if name in ("--port", "--rest_api_port"):
            continue  # local_server picks free ports
        if name == "--model_config_file":
            value = str(config_file)
        elif name == "--model_config_file_poll_wait_seconds":
            value = str(POLL_SECONDS)
        elif value.startswith("/config/"):
            value = str(STOCK_CONFIG_DIR / value.removeprefix("/config/"))
        flags.append(f"{name}={value}")
    return [*flags, f"--file_system_poll_wait_seconds={POLL_SECONDS}"]


def labelled_config(base_path: Path, stable: int, canary: int) -> str:
    text = model_config_text(str(base_path))
    return text.replace('key: "stable" value: 1', f'key: "stable" value: {stable}').replace(
        'key: "canary" value: 2', f'key: "canary" value: {canary}'
    )


def write_atomically(path: Path, text: str) -> None:
    staging = path.with_name(path.name + ".new")
    staging.write_text(text)
    os.replace(staging, path)


class Controlled:
    def __init__(self, server, repository: Path, expectations):
        self.server = server
        self.repository = repository
        self.expectations = expectations
        self.config_file = repository / "models.config"

    def url(self, path: str) -> str:
        return self.server.rest_url + path

    def predict_rest(self, route: str = "") -> requests.Response:
        body = {"instances": self.expectations.images.tolist()}
        return requests.post(self.url(f"/v1/models/{MODEL}{route}:predict"), json=body, timeout=60)

    def label_version(self, label: str) -> int:
        reply = requests.get(self.url(f"/v1/models/{MODEL}/labels/{label}/metadata"), timeout=10)
        assert reply.status_code == 200, reply.text
        return int(reply.json()["model_spec"]["version"])


@pytest.fixture(scope="module")
def controlled(conformance_repository: Path, tmp_path_factory):
    if external_target():
        pytest.skip("needs control of the server (restart, repository writes); external target")
    repository = tmp_path_factory.mktemp("controlled") / "repository"
    shutil.copytree(conformance_repository, repository)
    write_atomically(repository / "models.config", labelled_config(repository, 1, 2))
    log_dir = tmp_path_factory.mktemp("controlled-logs")
    with local_server(
        *compose_flags(repository / "models.config"), log_dir=log_dir, model_name=MODEL
    ) as server:
        try:
            wait_for_versions(server.rest_url, {1, 2})
        except TimeoutError as error:
            pytest.fail(f"{error}\n{server.log()[-4000:]}")
        yield Controlled(server, repository, Expectations.load(repository))


@pytest.fixture(scope="module")
def stubs(controlled: Controlled):
    import grpc
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    channel = grpc.insecure_channel(controlled.server.grpc_target)
    yield (
        prediction_service_pb2_grpc.PredictionServiceStub(channel),
        model_service_pb2_grpc.ModelServiceStub(channel),
    )
    channel.close()


def reload_request(text: str):
    from google.protobuf import text_format
    from tensorflow_serving.apis import model_management_pb2
    from tensorflow_serving.config import model_server_config_pb2

    config = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    return model_management_pb2.ReloadConfigRequest(config=config)


def test_compose_command_line_runs_the_local_server(controlled: Controlled):
    """Every flag compose.yaml gives the stock image is accepted, labels included."""
    assert controlled.label_version("stable") == 1
    assert controlled.label_version("canary") == 2


def healthcheck_command(port: int, model: str = MODEL) -> list[str]:
    """compose.yaml's healthcheck command, aimed at `port` and `model`."""
    compose = yaml.safe_load((STOCK_CONFIG_DIR / "compose.yaml").read_text())
    (service,) = compose["services"].values()
    kind, *command = service["healthcheck"]["test"]
    assert kind == "CMD"
    return [
        part.replace("127.0.0.1/8501", f"127.0.0.1/{port}").replace(
            f"/v1/models/{MODEL} ", f"/v1/models/{model} "
        )
        for part in command
    ]


def test_compose_healthcheck_command(controlled: Controlled):
    """The healthcheck's bash /dev/tcp request, run by this machine's bash and grep against a
    server that answers TF Serving's status JSON: healthy for mnist, unhealthy for a model that
    is not served."""
    port = controlled.server.rest_port
    healthy = subprocess.run(healthcheck_command(port), capture_output=True, timeout=10)
    assert healthy.returncode == 0, healthy.stderr
    unknown = subprocess.run(
        healthcheck_command(port, "no-such-model"), capture_output=True, timeout=10
    )
    assert unknown.returncode != 0


def test_reload_config_moves_a_label(controlled: Controlled, stubs):
    """An operator edits models.config and asks for a reload instead of waiting for the poll."""
    _, model_stub = stubs
    promoted = labelled_config(controlled.repository, stable=2, canary=2)
    write_atomically(controlled.config_file, promoted)
    response = model_stub.HandleReloadConfigRequest(reload_request(promoted), timeout=TIMEOUT)
    assert response.status.error_code == 0, response.status.error_message
    assert controlled.label_version("stable") == 2
    reply = controlled.predict_rest("/labels/stable")
    assert reply.status_code == 200
    np.testing.assert_allclose(
        [row["probabilities"] for row in reply.json()["predictions"]],
        controlled.expectations.outputs[2]["probabilities"],
        atol=TOLERANCE,
    )


def test_reload_refuses_a_label_on_an_unloaded_version(controlled: Controlled, stubs):
    """server_core.cc UpdateModelVersionLabelMap: moving an existing label to a version that is
    not AVAILABLE fails, --allow_version_labels_for_unavailable_models or not."""
    _, model_stub = stubs
    broken = labelled_config(controlled.repository, stable=99, canary=2)
    assert_rpc_error(
        lambda: model_stub.HandleReloadConfigRequest(reload_request(broken), timeout=TIMEOUT),
        "FAILED_PRECONDITION",
        rf"^Request to assign label to version 99 of model {MODEL}, which is not currently "
        r"available for inference$",
    )
    assert controlled.label_version("stable") == 2


def wait_for_label(controlled: Controlled, label: str, version: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while (current := controlled.label_version(label)) != version:
        assert time.monotonic() < deadline, f"{label} still names {current}, not {version}"
        time.sleep(0.2)


def test_config_poll_applies_an_edit(controlled: Controlled):
    """--model_config_file_poll_wait_seconds: editing models.config alone moves the label."""
    time.sleep(2 * POLL_SECONDS)  # let the poll see the previous test's file first
    write_atomically(
        controlled.config_file, labelled_config(controlled.repository, stable=1, canary=2)
    )
    wait_for_label(controlled, "stable", 1, seconds=10 * POLL_SECONDS + 5)


def test_config_poll_reapplies_the_file_after_a_reload_request(controlled: Controlled, stubs):
    """TF Serving's poll calls ReloadConfig with the file's content on every tick, changed or
    not (model_servers/server.cc PollFilesystemAndReloadConfig): a label moved only by
    HandleReloadConfigRequest snaps back to what models.config says. The file is the truth."""
    _, model_stub = stubs
    promoted = labelled_config(controlled.repository, stable=2, canary=2)
    response = model_stub.HandleReloadConfigRequest(reload_request(promoted), timeout=TIMEOUT)
    assert response.status.error_code == 0, response.status.error_message
    wait_for_label(controlled, "stable", 1, seconds=10 * POLL_SECONDS + 5)


def test_new_version_replaces_the_oldest_without_a_failed_request(controlled: Controlled, stubs):
    """Publishing version 3 (staged, then renamed) with latest {num_versions: 2}: 3 loads, 1
    unloads, every request in flight meanwhile succeeds, non-integer folders are ignored."""
    prediction_stub, model_stub = stubs
    from tensorflow_serving.apis import predict_pb2

    # Start from the repository's labels whatever the tests above left behind.
    original = labelled_config(controlled.repository, stable=1, canary=2)
    write_atomically(controlled.config_file, original)
    model_stub.HandleReloadConfigRequest(reload_request(original), timeout=TIMEOUT)
    assert controlled.label_version("stable") == 1

    base = controlled.repository / MODEL
    (base / "not-a-version").mkdir()
    (base / "not-a-version" / "saved_model.pb").write_bytes(b"not a SavedModel")

    failures: list[str] = []
    served_versions: set[int] = set()
    stop = threading.Event()
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.inputs["images"].CopyFrom(packed_tensor(controlled.expectations.images, DT_UINT8))

    def rest_traffic():
        while not stop.is_set():
            reply = controlled.predict_rest()
            if reply.status_code != 200:
                failures.append(f"REST {reply.status_code}: {reply.text[:200]}")

    def grpc_traffic():
        while not stop.is_set():
            try:
                response = prediction_stub.Predict(request, timeout=TIMEOUT)
                served_versions.add(response.model_spec.version.value)
            except Exception as error:  # any failure is the finding; keep the text
                failures.append(f"gRPC {error!r}")

    threads = [threading.Thread(target=rest_traffic), threading.Thread(target=grpc_traffic)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1)
        staging = base / ".staging-3"
        shutil.copytree(base / "2", staging)
        staging.rename(base / "3")
        wait_for_versions(controlled.server.rest_url, {2, 3}, timeout=60)
        deadline = time.monotonic() + 30
        while 3 not in served_versions and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=TIMEOUT)
    assert not failures, f"{len(failures)} failed requests during the swap: {failures[:5]}"
    assert 3 in served_versions, f"never served version 3 (saw {served_versions})"
    assert served_versions <= {2, 3}

    statuses = requests.get(controlled.url(f"/v1/models/{MODEL}"), timeout=10).json()
    states = {entry["version"]: entry["state"] for entry in statuses["model_version_status"]}
    assert states["2"] == states["3"] == "AVAILABLE"
    assert states.get("1", "END") == "END", states
    assert set(states) <= {"1", "2", "3"}, f"non-integer folder listed: {states}"
    # stable still names version 1, which is gone: the label now answers NOT_FOUND.
    assert_rest_error(
        controlled.predict_rest("/labels/stable"),
        404,
        rf"^Servable not found for request: Specific\({MODEL}, 1\)$",
    )


def test_broken_version_is_reported_and_the_others_keep_serving(controlled: Controlled, stubs):
    """A version that fails to load ends as END with its error in the status API.

    Stock TF Serving first retries the load (--max_num_load_retries, default 5, a minute apart)
    and reports LOADING meanwhile; the local server may give up sooner, so this waits for END.
    """
    prediction_stub, _ = stubs
    from tensorflow_serving.apis import predict_pb2

    base = controlled.repository / MODEL
    staging = base / ".staging-4"
    staging.mkdir()
    (staging / "saved_model.pb").write_bytes(b"this is not a SavedModel")
    staging.rename(base / "4")

    deadline = time.monotonic() + 60
    entry = {}
    while time.monotonic() < deadline:
        reply = requests.get(controlled.url(f"/v1/models/{MODEL}/versions/4"), timeout=10)
        if reply.status_code == 200:
            (entry,) = reply.json()["model_version_status"]
            if entry["state"] == "END":
                break
        time.sleep(0.3)
    assert entry.get("state") == "END", f"version 4 never reached END: {entry}"
    assert entry["status"]["error_code"] != "OK"
    assert entry["status"]["error_message"]

    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.inputs["images"].CopyFrom(packed_tensor(controlled.expectations.images, DT_UINT8))
    response = prediction_stub.Predict(request, timeout=TIMEOUT)
    assert response.model_spec.version.value == 3
    np.testing.assert_allclose(
        to_numpy(response.outputs["probabilities"]),
        controlled.expectations.outputs[2]["probabilities"],  # version 3 is a copy of 2
        atol=TOLERANCE,
    )
