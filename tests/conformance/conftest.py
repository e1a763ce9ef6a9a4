"""Conformance target: the local server (default) or a real TF Serving (environment variables).

By default the session generates the model repository of `make_repository.py` and starts
`python -m serving` on it with the same flags serving/compose.yaml gives the stock image. With
TFS_CONFORMANCE_REST=host:port, TFS_CONFORMANCE_GRPC=host:port and TFS_CONFORMANCE_REPOSITORY=DIR
(the folder make_repository wrote and the server serves) the suite talks to that server instead;
tests that need to restart or reconfigure the server skip there.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from conformance_support import (
    ENV_GRPC,
    ENV_REPOSITORY,
    ENV_REST,
    MODEL,
    Expectations,
    Target,
    external_target,
    server_flags,
    wait_for_versions,
)
from harness import find_mnist_dir, local_server, run_python


@pytest.fixture(scope="session")
def conformance_repository(
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """The repository of make_repository.py: the external one, or generated (about 10 s)."""
    if external_target():
        configured = os.environ.get(ENV_REPOSITORY)
        if not (configured and os.environ.get(ENV_REST) and os.environ.get(ENV_GRPC)):
            pytest.fail(
                f"an external target needs {ENV_REST}, {ENV_GRPC} and {ENV_REPOSITORY} "
                "(the folder `python -m tests.conformance.make_repository` wrote)"
            )
        return Path(configured)
    repository = tmp_path_factory.mktemp("conformance") / "repository"
    arguments = ["-m", "tests.conformance.make_repository", str(repository)]
    mnist_dir = find_mnist_dir()
    if mnist_dir is not None:
        arguments += ["--mnist-dir", str(mnist_dir)]
    result = run_python(*arguments, timeout=300)
    if result.returncode != 0:
        pytest.fail(f"make_repository failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    return repository


@pytest.fixture(scope="session")
def target(
    conformance_repository: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Target]:
    """The server under test, with versions 1 and 2 of mnist AVAILABLE."""
    expectations = Expectations.load(conformance_repository)
    if external_target():
        rest_url = "http://" + os.environ[ENV_REST]
        wait_for_versions(rest_url, {1, 2}, timeout=30)
        yield Target(rest_url, os.environ[ENV_GRPC], conformance_repository, expectations, True)
        return
    log_dir = tmp_path_factory.mktemp("conformance-logs")
    with local_server(
        *server_flags(conformance_repository), log_dir=log_dir, model_name=MODEL
    ) as server:
        try:
            wait_for_versions(server.rest_url, {1, 2})
        except TimeoutError as error:
            pytest.fail(f"{error}\n{server.log()[-4000:]}")
        yield Target(
            server.rest_url,
            server.grpc_target,
            conformance_repository,
            expectations,
            False,
            server,
        )


@pytest.fixture(scope="session")
def grpc_channel(target: Target):
    import grpc

    # TF Serving accepts messages up to 2 GB (server.cc: SetMaxMessageSize(INT32_MAX)); the
    # client side must allow large messages too for the large-payload tests.
    options = [
        ("grpc.max_send_message_length", 64 * 1024 * 1024),
        ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ]
    channel = grpc.insecure_channel(target.grpc_address, options=options)
    yield channel
    channel.close()


@pytest.fixture(scope="session")
def prediction_stub(grpc_channel):
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    return prediction_service_pb2_grpc.PredictionServiceStub(grpc_channel)


@pytest.fixture(scope="session")
def model_stub(grpc_channel):
    from tensorflow_serving.apis import model_service_pb2_grpc

    return model_service_pb2_grpc.ModelServiceStub(grpc_channel)
