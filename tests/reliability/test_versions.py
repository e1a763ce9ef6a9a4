"""Version changes under live traffic: a rollout with the old versions deleted, and broken
versions (garbage saved_model.pb, no variables/, an empty folder) that must not cost a request.

Four clients of the real client library (two gRPC, two REST, no retries) send predicts of real
MNIST digits the whole time; every failed request, wrong answer or step back to an older version
fails the test.
"""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest
from reliability_support import (
    MODEL,
    Ports,
    Traffic,
    publish_copy,
    start_available,
    stopped_at_exit,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CLIENTS = 4
BATCH = 8
HOLD_SECONDS = 1.5  # traffic goes on this long in each state before the next change


def version_states(ports: Ports) -> dict[int, tuple[str, str]]:
    """version -> (state, error_code) from the REST status API."""
    import requests

    reply = requests.get(f"{ports.rest_url}/v1/models/{MODEL}", timeout=10)
    reply.raise_for_status()
    return {
        int(entry["version"]): (entry["state"], entry["status"]["error_code"])
        for entry in reply.json()["model_version_status"]
    }


def serve_repository(published_model, tmp_path):
    """A fresh repository with version 1 (the published model), a server polling it every
    second."""
    base = tmp_path / "models" / MODEL
    base.mkdir(parents=True)
    publish_copy(published_model.version_dir(1), base, 1)
    ports = Ports()
    server = start_available(
        ports,
        f"--model_name={MODEL}",
        f"--model_base_path={base}",
        "--file_system_poll_wait_seconds=1",
        log_path=tmp_path / "server.log",
    )
    return base, ports, server


def expected_class_ids(ports: Ports, images: np.ndarray) -> np.ndarray:
    from client.transport import connect
    from client.types import ModelSpec

    with connect(ports.grpc_url, retries=0) as transport:
        reply = transport.predict(ModelSpec(name=MODEL), {"images": images})
    assert reply.model_version == 1
    return np.asarray(reply.outputs["class_ids"])


def assert_never_went_back(traffic: Traffic) -> None:
    for versions in traffic.versions:
        assert versions == sorted(versions), f"a client went back to an older version: {versions}"


def test_rollout_with_old_versions_deleted_under_four_clients(
    published_model, digits, tmp_path, figures
):
    """Version 2 is published and version 1's folder deleted once 2 answers; then version 3 is
    published and version 2's folder deleted at once, while 3 is still loading."""
    images = digits[0][:BATCH, ..., None]
    base, ports, server = serve_repository(published_model, tmp_path)
    with stopped_at_exit(server.process):
        expected = expected_class_ids(ports, images)
        started = time.monotonic()
        with Traffic(ports, images, expected, CLIENTS) as traffic:
            traffic.wait(lambda: min(traffic.sent) >= 5, what="first answers")
            publish_copy(published_model.version_dir(1), base, 2)
            traffic.wait(lambda: traffic.all_on(2), what="every client on version 2")
            time.sleep(HOLD_SECONDS)
            shutil.rmtree(base / "1")
            traffic.wait(
                lambda: version_states(ports).get(1, ("END",))[0] == "END", what="1 unloaded"
            )
            time.sleep(HOLD_SECONDS)
            publish_copy(published_model.version_dir(1), base, 3)
            shutil.rmtree(base / "2")  # the serving version's folder, before 3 is loaded
            three_then = version_states(ports).get(3, ("not listed",))[0]
            traffic.wait(lambda: traffic.all_on(3), what="every client on version 3")
            time.sleep(HOLD_SECONDS)
        seconds = time.monotonic() - started
        states = {version: state for version, (state, _) in version_states(ports).items()}
    assert not traffic.failures, traffic.summary()
    assert_never_went_back(traffic)
    assert all(versions[-1] == 3 for versions in traffic.versions), traffic.versions
    assert states.get(3) == "AVAILABLE" and states.get(2, "END") == "END", states
    figures(
        clients=CLIENTS, requests=traffic.requests, failed=len(traffic.failures),
        seconds=f"{seconds:.1f}", versions_seen="/".join(map(str, traffic.versions[0])),
        v3_when_v2_deleted=three_then.replace(" ", "_"),
        final_states=",".join(f"{v}:{s}" for v, s in sorted(states.items())),
    )  # fmt: skip


def test_broken_versions_leave_the_previous_one_serving(published_model, digits, tmp_path, figures):
    """Versions 2 (garbage saved_model.pb), 3 (no variables/) and 4 (an empty folder) appear
    one after another; version 1 answers every request meanwhile. A good version 5 then takes
    over without a failed request."""
    images = digits[0][:BATCH, ..., None]
    base, ports, server = serve_repository(published_model, tmp_path)
    broken: dict[int, str] = {}
    with stopped_at_exit(server.process):
        expected = expected_class_ids(ports, images)
        started = time.monotonic()
        with Traffic(ports, images, expected, CLIENTS) as traffic:
            traffic.wait(lambda: min(traffic.sent) >= 5, what="first answers")

            def appear(version: int, make) -> None:
                staging = base / f".staging-{version}"
                make(staging)
                staging.rename(base / str(version))
                traffic.wait(
                    lambda: version_states(ports).get(version, ("",))[0] == "END",
                    what=f"broken version {version} to end",
                )
                broken[version] = version_states(ports)[version][1]
                sent = traffic.requests
                traffic.wait(lambda: traffic.requests >= sent + 20, what="more answers")
                assert traffic.all_on(1), traffic.latest

            def garbage(folder):
                folder.mkdir()
                (folder / "saved_model.pb").write_bytes(b"this is not a SavedModel\n" * 40)

            def no_variables(folder):
                shutil.copytree(published_model.version_dir(1), folder)
                shutil.rmtree(folder / "variables")

            appear(2, garbage)
            appear(3, no_variables)
            appear(4, lambda folder: folder.mkdir())
            publish_copy(published_model.version_dir(1), base, 5)
            traffic.wait(lambda: traffic.all_on(5), what="every client on version 5")
            time.sleep(HOLD_SECONDS)
        seconds = time.monotonic() - started
    assert not traffic.failures, traffic.summary()
    assert_never_went_back(traffic)
    assert all(versions == [1, 5] for versions in traffic.versions), traffic.versions
    assert all(code != "OK" for code in broken.values()), broken
    figures(
        clients=CLIENTS, requests=traffic.requests, failed=len(traffic.failures),
        seconds=f"{seconds:.1f}",
        broken="/".join(f"{version}:{code}" for version, code in broken.items()),
        versions_seen="1/5",
    )  # fmt: skip
