"""The local server is safe on a laptop by default (issue 12, "Security posture").

It listens on loopback only, HandleReloadConfigRequest may only load models from the folders the
server started with (or --model_roots) and can be switched off, and answers and metrics name
version folders as <model>/<folder> rather than by absolute path (--show_paths restores TF
Serving's absolute paths). Stock TF Serving has none of these guards; docs/serving.md lists
them as deliberate differences.
"""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import pytest
import requests
from harness import REPO_ROOT, local_server
from serving_support import publish, version_states, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MODEL = "digits"
MONITORING = f"--monitoring_config_file={REPO_ROOT / 'serving' / 'monitoring.config'}"


def reload_request(name: str, base_path: Path):
    from tensorflow_serving.apis import model_management_pb2

    request = model_management_pb2.ReloadConfigRequest()
    entry = request.config.model_config_list.config.add()
    entry.name, entry.base_path, entry.model_platform = name, str(base_path), "tensorflow"
    return request


def reload(server, request) -> grpc.RpcError | None:
    from tensorflow_serving.apis import model_service_pb2_grpc

    with grpc.insecure_channel(server.grpc_target) as channel:
        try:
            model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(
                request, timeout=60
            )
        except grpc.RpcError as error:
            return error
    return None


LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F"}


def listening_addresses(port: int) -> set[str]:
    """Local addresses of the listening TCP sockets on `port` (/proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        with open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                address, port_hex = fields[1].rsplit(":", 1)
                if int(port_hex, 16) == port and fields[3] == "0A":  # LISTEN
                    found.add(address)
    return found


@pytest.fixture()
def repository(tmp_path: Path, contract_versions) -> Path:
    root = tmp_path / "models"
    publish(contract_versions[1][0], root / MODEL, 1)
    publish(contract_versions[2][0], root / "other", 1)
    return root


def test_ports_listen_on_loopback_by_default(repository: Path, tmp_path: Path):
    with local_server(
        f"--model_name={MODEL}", f"--model_base_path={repository / MODEL}",
        log_dir=tmp_path, model_name=MODEL,
    ) as server:  # fmt: skip
        for port in (server.grpc_port, server.rest_port):
            # 127.0.0.1 in /proc/net/tcp's byte order, or as an IPv4-mapped IPv6 socket
            # (grpc's); 0.0.0.0 would be 00000000, :: all zeros.
            addresses = listening_addresses(port)
            assert addresses and addresses <= LOOPBACK, (port, addresses)


def test_reload_may_not_reach_outside_the_model_roots(repository: Path, tmp_path: Path):
    outside = tmp_path / "elsewhere"
    publish(repository / "other" / "1", outside / "x", 1)
    (repository / "sneaky").symlink_to(outside / "x")
    with local_server(
        f"--model_name={MODEL}", f"--model_base_path={repository / MODEL}",
        log_dir=tmp_path, model_name=MODEL,
    ) as server:  # fmt: skip
        for base in (outside / "x", repository / "sneaky", Path("/etc")):
            error = reload(server, reload_request("x", base))
            assert error is not None and error.code() == grpc.StatusCode.PERMISSION_DENIED, base
            assert "--model_roots" in error.details()
        # Nothing changed: the refused requests unloaded nothing.
        assert version_states(server.rest_url, MODEL)[1]["state"] == "AVAILABLE"
        # A model from the same repository is fine.
        assert reload(server, reload_request("other", repository / "other")) is None
        wait_for(
            lambda: version_states(server.rest_url, "other").get(1, {}).get("state") == "AVAILABLE",
            what="model other to load",
        )


def test_reload_can_be_switched_off(repository: Path, tmp_path: Path):
    with local_server(
        f"--model_name={MODEL}", f"--model_base_path={repository / MODEL}",
        "--allow_config_reload=false", log_dir=tmp_path, model_name=MODEL,
    ) as server:  # fmt: skip
        error = reload(server, reload_request(MODEL, repository / MODEL))
        assert error is not None and error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "--allow_config_reload" in error.details()


@pytest.mark.parametrize("show_paths", [False, True])
def test_answers_and_metrics_carry_no_absolute_paths(repository, tmp_path, show_paths):
    broken = repository / MODEL / "2"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"not a SavedModel")
    with local_server(
        f"--model_name={MODEL}", f"--model_base_path={repository / MODEL}", MONITORING,
        f"--show_paths={str(show_paths).lower()}", log_dir=tmp_path,
    ) as server:  # fmt: skip
        wait_for(lambda: _state(server, 2) == "END", timeout=120, what="the broken version to fail")
        status = requests.get(f"{server.rest_url}/v1/models/{MODEL}", timeout=10).text
        metrics = requests.get(f"{server.rest_url}/monitoring/prometheus/metrics", timeout=10).text
    absolute = str(repository)
    if show_paths:
        assert absolute in status and absolute in metrics
    else:
        assert absolute not in status and absolute not in metrics
        assert f"{MODEL}/2" in status
        assert f'model_path="{MODEL}/2",status="fail"' in metrics


def _state(server, version: int) -> str | None:
    try:
        return version_states(server.rest_url, MODEL).get(version, {}).get("state")
    except requests.RequestException:
        return None
