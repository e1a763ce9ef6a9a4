"""gRPC adapter: tensorflow.serving.PredictionService and ModelService over the core.

Requests accept packed `tensor_content` and typed `*_val` fields. Replies use the typed
fields, as stock TF Serving does by default (its predict_util serializes outputs with
AsProtoField "for backward compatibility"), so a client that only reads `tensor_content`
fails here exactly as it would against the stock image. Message size limits are lifted,
as TF Serving does.
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
import time

import grpc
from tensorflow_serving.apis import (
    classification_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from serving import tensorproto
from serving.config import ConfigError, model_configs_from_proto
from serving.dataplane import DataPlane, RegressResult, RequestSpec, serialize_examples
from serving.errors import Code, ServingError, invalid_argument
from serving.logs import log
from serving.metrics import Metrics
from serving.replies import metadata_response, model_spec, status_response


def request_spec(model_spec) -> RequestSpec:
    version = model_spec.version.value if model_spec.HasField("version") else None
    label = model_spec.version_label or None
    return RequestSpec(model_spec.name, version, label, model_spec.signature_name)


def fill_model_spec(target, name: str, version: int, signature_name: str | None) -> None:
    target.CopyFrom(model_spec(name, version, signature_name))


def _model_name(request) -> str:
    if hasattr(request, "model_spec"):
        return request.model_spec.name
    tasks = getattr(request, "tasks", None)
    return tasks[0].model_spec.name if tasks else ""


def _handled(api: str):
    """Map ServingError to the gRPC status and record the request in the metrics."""

    def decorate(method):
        @functools.wraps(method)
        def wrapper(self, request, context):
            started = time.perf_counter()
            model = _model_name(request)
            version, status = None, "OK"
            try:
                response = method(self, request, context)
                spec = getattr(response, "model_spec", None)
                if spec is not None and spec.HasField("version"):
                    version = spec.version.value
                return response
            except ServingError as error:
                status = error.code.name
                context.abort(grpc.StatusCode[error.code.name], error.message)
            except Exception as error:  # a bug: UNKNOWN, as grpc answers, and counted so
                status = Code.UNKNOWN.name
                log("request_failed", level="error", api=api, error=repr(error))
                context.abort(grpc.StatusCode.UNKNOWN, f"{type(error).__name__}: {error}")
            finally:
                if model:
                    self.metrics.request(
                        model, version, api, "GRPC", status, time.perf_counter() - started
                    )

        return wrapper

    return decorate


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(
        self,
        dataplane: DataPlane,
        metrics: Metrics,
        max_request_bytes: int = tensorproto.DEFAULT_MAX_REQUEST_BYTES,
    ) -> None:
        self.dataplane, self.metrics = dataplane, metrics
        self.max_request_bytes = max_request_bytes

    @_handled("Predict")
    def Predict(self, request, context):
        if not request.HasField("model_spec"):
            raise invalid_argument("Missing ModelSpec")
        budget = tensorproto.Budget(self.max_request_bytes)
        inputs = {
            name: tensorproto.decode(name, tensor, budget)
            for name, tensor in request.inputs.items()
        }
        started = time.perf_counter()
        result = self.dataplane.predict(
            request_spec(request.model_spec), inputs, list(request.output_filter)
        )
        self.metrics.runtime(result.name, "Predict", time.perf_counter() - started)
        response = predict_pb2.PredictResponse()
        fill_model_spec(response.model_spec, result.name, result.version, result.signature_name)
        for name, array in result.outputs.items():
            response.outputs[name].CopyFrom(tensorproto.encode(array))
        return response

    @_handled("GetModelMetadata")
    def GetModelMetadata(self, request, context):
        if not request.HasField("model_spec"):
            raise invalid_argument("Missing ModelSpec")
        if not request.metadata_field:
            raise invalid_argument(
                "GetModelMetadataRequest must specify at least one metadata_field"
            )
        for field in request.metadata_field:
            if field != "signature_def":
                raise invalid_argument(f"Metadata field {field} is not supported")
        name, version, signature_defs = self.dataplane.metadata(request_spec(request.model_spec))
        return metadata_response(name, version, signature_defs)

    @_handled("Classify")
    def Classify(self, request, context):
        if not request.HasField("model_spec"):
            raise invalid_argument("Missing ModelSpec")
        result = self.dataplane.classify(
            request_spec(request.model_spec), serialize_examples(request.input)
        )
        response = classification_pb2.ClassificationResponse()
        fill_model_spec(response.model_spec, result.name, result.version, result.signature_name)
        for row in result.classifications:
            classifications = response.result.classifications.add()
            for label, score in row:
                classifications.classes.add(label=label, score=score)
        return response

    @_handled("Regress")
    def Regress(self, request, context):
        if not request.HasField("model_spec"):
            raise invalid_argument("Missing ModelSpec")
        result = self.dataplane.regress(
            request_spec(request.model_spec), serialize_examples(request.input)
        )
        response = regression_pb2.RegressionResponse()
        fill_model_spec(response.model_spec, result.name, result.version, result.signature_name)
        for value in result.values:
            response.result.regressions.add(value=value)
        return response

    @_handled("MultiInference")
    def MultiInference(self, request, context):
        tasks = [(request_spec(task.model_spec), task.method_name) for task in request.tasks]
        results = self.dataplane.multi_inference(tasks, serialize_examples(request.input))
        response = inference_pb2.MultiInferenceResponse()
        for result in results:
            entry = response.results.add()
            fill_model_spec(entry.model_spec, result.name, result.version, result.signature_name)
            if isinstance(result, RegressResult):
                for value in result.values:
                    entry.regression_result.regressions.add(value=value)
            else:
                for row in result.classifications:
                    classifications = entry.classification_result.classifications.add()
                    for label, score in row:
                        classifications.classes.add(label=label, score=score)
        return response


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(
        self, dataplane: DataPlane, metrics: Metrics, reload_guard: ReloadGuard | None = None
    ) -> None:
        self.dataplane, self.metrics = dataplane, metrics
        self.reload_guard = reload_guard

    @_handled("GetModelStatus")
    def GetModelStatus(self, request, context):
        if not request.HasField("model_spec"):
            raise invalid_argument("Missing ModelSpec")
        return status_response(self.dataplane.status(request_spec(request.model_spec)))

    def HandleReloadConfigRequest(self, request, context):
        response = model_management_pb2.ReloadConfigResponse()
        try:
            if self.reload_guard is not None:
                self.reload_guard.check_enabled()
            if request.config.WhichOneof("config") != "model_config_list":
                raise invalid_argument(
                    "ServerModelConfig type not supported by HandleReloadConfigRequest. Only "
                    "ModelConfigList is currently supported"
                )
            try:
                models = model_configs_from_proto(request.config)
            except ConfigError as error:
                raise invalid_argument(str(error)) from None
            if self.reload_guard is not None:
                self.reload_guard.check_models(models)
            self.dataplane.reload_config(models)
        except ServingError as error:
            log("config_reload_failed", level="error", source="HandleReloadConfigRequest",
                code=error.code.name, error=error.message)  # fmt: skip
            response.status.error_code = int(error.code)
            response.status.error_message = error.message
            context.abort(grpc.StatusCode[error.code.name], error.message)
        response.status.error_code = int(Code.OK)
        return response


class ReloadGuard:
    """What a HandleReloadConfigRequest may do on this server (local only; TF Serving, which
    has no authentication either, takes any request from anyone who reaches its port).

    With `enabled` false every request answers PERMISSION_DENIED. Otherwise each model's base
    path, symlinks resolved, must lie inside one of `roots`, so that a request cannot make the
    server load (and run the signatures of) a SavedModel from anywhere on the machine.
    """

    def __init__(self, enabled: bool, roots: list[str]) -> None:
        self.enabled = enabled
        self.roots = [os.path.realpath(root) for root in roots if root]

    def check_enabled(self) -> None:
        if not self.enabled:
            raise ServingError(
                Code.PERMISSION_DENIED,
                "HandleReloadConfigRequest is disabled on this server (--allow_config_reload="
                "false); change the --model_config_file instead",
            )

    def check_models(self, models) -> None:
        for model in models:
            path = os.path.realpath(model.base_path)
            if not any(path == root or path.startswith(root + os.sep) for root in self.roots):
                raise ServingError(
                    Code.PERMISSION_DENIED,
                    f"model {model.name}: base_path {model.base_path} is outside the folders "
                    "this server loads models from; start it with --model_roots=<folder,...> "
                    "to allow more",
                )


def build_server(
    dataplane: DataPlane,
    metrics: Metrics,
    *,
    host: str,
    port: int,
    max_threads: int,
    socket_path: str = "",
    channel_arguments: list[tuple[str, int | str]] = (),
    profiler: bool = True,
    max_request_bytes: int = tensorproto.DEFAULT_MAX_REQUEST_BYTES,
    reload_guard: ReloadGuard | None = None,
):
    """A grpc.Server, ready to start, listening on host:port and, if given, on a Unix socket.

    As TF Serving: message sizes are not limited, --grpc_channel_arguments are applied to the
    server (one naming a key the server sets itself replaces it), and the profiler service is
    registered with the other two unless --enable_profiler=false. Raises OSError if it cannot
    listen.
    """
    given = {key for key, _ in channel_arguments}
    defaults = [
        ("grpc.max_send_message_length", -1),
        ("grpc.max_receive_message_length", -1),
        ("grpc.so_reuseport", 0),
    ]
    options = [item for item in defaults if item[0] not in given] + list(channel_arguments)
    server = grpc.server(
        concurrent.futures.ThreadPoolExecutor(max_threads, thread_name_prefix="grpc"),
        options=options,
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(dataplane, metrics, max_request_bytes), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        ModelService(dataplane, metrics, reload_guard), server
    )
    if profiler:
        from serving.profiler import add_profiler_service

        add_profiler_service(server)
    addresses = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"] if port else []
    if socket_path:
        addresses.append(f"unix:{socket_path}")
    for address in addresses:
        try:
            bound = server.add_insecure_port(address)
        except RuntimeError:
            bound = 0
        if bound == 0:
            where = f"on {socket_path}" if address.startswith("unix:") else f"on port {port}"
            raise OSError(f"cannot listen for gRPC {where} (in use?)")
    return server
