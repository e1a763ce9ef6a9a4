"""Wiring: model manager + data plane under the gRPC and REST adapters; clean SIGTERM."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

from serving.config import (
    ConfigError,
    ModelConfig,
    read_batching_parameters_file,
    read_model_config_file,
    read_monitoring_config_file,
)
from serving.errors import ServingError
from serving.logs import log
from serving.options import Options, grpc_channel_arguments

SHUTDOWN_GRACE_SECONDS = 30


def redact(error: ServingError, path: Path, shown: str) -> ServingError:
    """The error with the version folder's absolute path replaced by how answers show it."""
    return ServingError(error.code, error.message.replace(str(path), shown))


def run(options: Options) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        return _run(options)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _run(options: Options) -> int:
    from serving.batching import Batcher
    from serving.manager import ConfigFileWatcher, ModelManager
    from serving.metrics import Metrics

    watcher = None
    if options.model_config_file:
        models = read_model_config_file(options.model_config_file)
    else:
        models = [ModelConfig(options.model_name, options.model_base_path)]
    prometheus_path = None
    if options.monitoring_config_file:
        prometheus_path = read_monitoring_config_file(options.monitoring_config_file)
    batching = None
    if options.enable_batching:
        batching = read_batching_parameters_file(
            options.batching_parameters_file, default_threads=os.cpu_count() or 1
        )
    log(
        "server_starting", grpc_port=options.port, rest_port=options.rest_api_port,
        models=",".join(f"{m.name}:{m.base_path}:{m.policy.describe()}" for m in models),
        batching=batching is not None, warmup=options.enable_model_warmup,
        prometheus=prometheus_path or "-",
    )  # fmt: skip

    # Heavy imports only now that the command line is known to be good.
    import tensorflow as tf  # noqa: F401  (load TensorFlow before the first model load)

    from serving import grpc_service
    from serving.dataplane import DataPlane
    from serving.servable import LoadedVersion

    metrics = Metrics()
    batcher = Batcher(batching) if batching else None

    def shown(name: str, path: Path) -> str:
        """How answers and metrics name a version folder (logs keep the absolute path)."""
        return str(path) if options.show_paths else f"{name}/{path.name}"

    def load(name: str, version: int, path: Path) -> LoadedVersion:
        log("version_loading", model=name, version=version, path=path)
        label = shown(name, path)
        try:
            servable = LoadedVersion(name, version, path, options.prefer_tflite_model)
        except ServingError as error:
            metrics.load_attempt(label, "fail")
            raise redact(error, path, label) from None
        except Exception:
            metrics.load_attempt(label, "fail")
            raise
        metrics.load_attempt(label, "success")
        return servable

    dataplane_holder: list = []

    def warmup(servable) -> None:
        try:
            dataplane_holder[0].warmup(servable)
        except ServingError as error:
            raise redact(error, servable.path, shown(servable.name, servable.path)) from None

    manager = ModelManager(
        models,
        poll_seconds=options.file_system_poll_wait_seconds,
        loader=load,
        warmup=warmup if options.enable_model_warmup else None,
        on_state=metrics.state,
        allow_unavailable_labels=options.allow_version_labels_for_unavailable_models,
    )
    dataplane = DataPlane(manager, batcher)
    dataplane_holder.append(dataplane)

    stop = threading.Event()
    received: list[str] = []

    def on_signal(number, frame) -> None:
        received.append(signal.Signals(number).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    try:
        manager.start(wait=True)
    except ServingError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return 1
    if options.model_config_file:
        watcher = ConfigFileWatcher(
            options.model_config_file,
            options.model_config_file_poll_wait_seconds,
            manager,
            read_model_config_file,
        )
        watcher.start()

    try:
        grpc_server = grpc_service.build_server(
            dataplane,
            metrics,
            host=options.host,
            port=options.port,
            max_threads=options.grpc_max_threads,
            socket_path=options.grpc_socket_path,
            channel_arguments=grpc_channel_arguments(options.grpc_channel_arguments),
            profiler=options.enable_profiler,
            max_request_bytes=options.max_request_bytes,
            reload_guard=grpc_service.ReloadGuard(
                options.allow_config_reload,
                options.model_roots.split(",")
                if options.model_roots
                else [os.path.dirname(os.path.abspath(m.base_path)) for m in models],
            ),
        )
    except OSError as error:
        print(f"error: {error}", file=sys.stderr)
        manager.stop()
        return 1
    grpc_server.start()
    if options.port:
        log("grpc_listening", address=f"{options.host}:{options.port}")
    if options.grpc_socket_path:
        log("grpc_listening", address=f"unix:{options.grpc_socket_path}")

    def stop_grpc() -> threading.Event:
        return grpc_server.stop(SHUTDOWN_GRACE_SECONDS)

    exit_code = 0
    if options.rest_api_port:
        exit_code = _serve_rest(options, dataplane, metrics, prometheus_path, stop, stop_grpc)
    else:
        stop.wait()
        log("shutdown_started", signal=received[0])

    log("shutdown_draining")
    stop_grpc().wait()
    if batcher:
        batcher.close()
    if watcher:
        watcher.stop()
    manager.stop()
    log("server_stopped", exit_code=exit_code)
    return exit_code


def _event_loop_factory():
    """uvloop's event loop when it is installed (the `serve` extra pins it), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _serve_rest(options, dataplane, metrics, prometheus_path, stop, stop_grpc) -> int:
    import asyncio

    import uvicorn

    from serving.rest import JsonErrorHttpToolsProtocol, RestApi

    app = RestApi(
        dataplane,
        metrics,
        num_threads=options.rest_api_num_threads,
        timeout_ms=options.rest_api_timeout_in_ms,
        prometheus_path=prometheus_path,
        max_request_elements=options.max_request_elements,
    )

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            if not self.should_exit:
                log("shutdown_started", signal=signal.Signals(sig).name)
                stop_grpc()  # gRPC stops accepting at the same moment as REST
            super().handle_exit(sig, frame)

    config = uvicorn.Config(
        app,
        host=options.host,
        port=options.rest_api_port,
        # httptools' C parser on uvloop rather than h11 on asyncio's loop: one client at a time
        # went from 314 to 358 REST requests/s in one run on 2 shared cores; uvicorn's own 400s
        # answer {"error": ...} too.
        http=JsonErrorHttpToolsProtocol,
        loop="uvloop",
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
        timeout_keep_alive=60,
        server_header=False,
    )
    server = Server(config)

    async def serve() -> None:
        if stop.is_set():
            return
        task = asyncio.ensure_future(server.serve())
        while not task.done():
            await asyncio.sleep(0.2)
        await task

    started = time.monotonic()
    # uvicorn only installs config.loop in its own run(); this loop is ours, so make it uvloop.
    with asyncio.Runner(loop_factory=_event_loop_factory()) as runner:
        runner.run(serve())
    if not server.started and not stop.is_set():
        print(
            f"error: cannot listen for REST on port {options.rest_api_port} (in use?)",
            file=sys.stderr,
        )
        return 1
    log("rest_stopped", seconds=f"{time.monotonic() - started:.1f}")
    return 0
