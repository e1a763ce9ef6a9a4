"""A small TF-Serving-shaped server for the client's unit tests: real gRPC, real HTTP.

It serves one model, `mnist` version 3, with the project's contract (input `images` uint8
[-1, 28, 28, 1]; outputs `probabilities`, `class_ids`, `classes`), whose "prediction" is a pure
function of the pixels: class = mean pixel value mod 10. Tests can make it fail on purpose.
The end-to-end tests use the real local server instead; this one keeps unit tests fast and
independent of TensorFlow.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import numpy as np

from client.transport import protos
from client.transport.grpc_transport import to_numpy, to_tensor_proto

MODEL_NAME = "mnist"
MODEL_VERSION = 3
NUM_CLASSES = 10


def class_names() -> list[str]:
    return [f"digit-{k}" for k in range(NUM_CLASSES)]


def fake_predict(images: np.ndarray) -> dict[str, np.ndarray]:
    """The fake model: class = mean pixel mod 10, probability 0.91 for it and 0.01 for the rest."""
    class_ids = (images.reshape(len(images), -1).mean(axis=1).astype(np.int64)) % NUM_CLASSES
    probabilities = np.full((len(images), NUM_CLASSES), 0.01, dtype=np.float32)
    probabilities[np.arange(len(images)), class_ids] = 0.91
    classes = np.array([class_names()[k].encode() for k in class_ids], dtype=object)
    return {"probabilities": probabilities, "class_ids": class_ids, "classes": classes}


@dataclass
class Behaviour:
    """Knobs the tests turn; all counters are totals since start."""

    unavailable_next: int = 0  # answer the next N predicts with UNAVAILABLE / 503
    delay_seconds: float = 0.0  # think this long before answering a predict (a slow model)
    cut_next: int = 0  # REST: send the next N predict replies' headers and half a body, then close
    predict_calls: int = 0
    batch_sizes: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take_failure(self) -> bool:
        with self.lock:
            self.predict_calls += 1
            delay = self.delay_seconds
            if self.unavailable_next > 0:
                self.unavailable_next -= 1
                return True
        time.sleep(delay)
        return False


class _Refusal(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


_HTTP = {"NOT_FOUND": 404, "INVALID_ARGUMENT": 400, "UNAVAILABLE": 503}


LABELS = {"stable": MODEL_VERSION}


def _label_version(label: str) -> int:
    if label not in LABELS:
        raise _Refusal("NOT_FOUND", f"Unrecognized servable version label: {label}")
    return LABELS[label]


def _requested_version(model_spec) -> int | None:
    if model_spec.HasField("version"):
        return model_spec.version.value
    if model_spec.version_label:
        return _label_version(model_spec.version_label)
    return None


def _check_model(name: str, version: int | None) -> None:
    if name != MODEL_NAME:
        raise _Refusal("NOT_FOUND", f"Servable not found for request: Latest({name})")
    if version not in (None, MODEL_VERSION):
        raise _Refusal("NOT_FOUND", f"Servable not found for request: Specific({name}, {version})")


def _check_images(images: np.ndarray) -> None:
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (28, 28, 1):
        raise _Refusal(
            "INVALID_ARGUMENT",
            f"images must be uint8 [-1,28,28,1], got {images.dtype} {images.shape}",
        )


def _signature_json() -> dict:
    def tensor(dtype: str, dims: list[int]) -> dict:
        return {
            "dtype": dtype,
            "tensor_shape": {
                "dim": [{"size": str(d), "name": ""} for d in dims],
                "unknown_rank": False,
            },
            "name": "x",
        }

    return {
        "inputs": {"images": tensor("DT_UINT8", [-1, 28, 28, 1])},
        "outputs": {
            "probabilities": tensor("DT_FLOAT", [-1, NUM_CLASSES]),
            "class_ids": tensor("DT_INT64", [-1]),
            "classes": tensor("DT_STRING", [-1]),
        },
        "method_name": "tensorflow/serving/predict",
    }


class _GrpcServicer:
    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.pb = protos.load()

    def _abort(self, context, refusal: _Refusal):
        context.abort(getattr(grpc.StatusCode, refusal.code), refusal.message)

    def Predict(self, request, context):
        try:
            if self.behaviour.take_failure():
                raise _Refusal("UNAVAILABLE", "fake server: try again")
            version = _requested_version(request.model_spec)
            _check_model(request.model_spec.name, version)
            if request.model_spec.signature_name not in ("", "serving_default"):
                raise _Refusal(
                    "INVALID_ARGUMENT", f"no signature {request.model_spec.signature_name}"
                )
            images = to_numpy(request.inputs["images"])
            _check_images(images)
        except _Refusal as refusal:
            self._abort(context, refusal)
        with self.behaviour.lock:
            self.behaviour.batch_sizes.append(len(images))
        reply = self.pb.predict_pb2.PredictResponse()
        reply.model_spec.name = MODEL_NAME
        reply.model_spec.version.value = MODEL_VERSION
        reply.model_spec.signature_name = "serving_default"
        for name, array in fake_predict(images).items():
            reply.outputs[name].CopyFrom(to_tensor_proto(array))
        return reply

    def GetModelMetadata(self, request, context):
        try:
            version = _requested_version(request.model_spec)
            _check_model(request.model_spec.name, version)
        except _Refusal as refusal:
            self._abort(context, refusal)
        from google.protobuf import json_format

        signature_map = self.pb.get_model_metadata_pb2.SignatureDefMap()
        json_format.ParseDict(
            {"signature_def": {"serving_default": _signature_json()}}, signature_map
        )
        reply = self.pb.get_model_metadata_pb2.GetModelMetadataResponse()
        reply.model_spec.name = MODEL_NAME
        reply.model_spec.version.value = MODEL_VERSION
        reply.metadata["signature_def"].Pack(signature_map)
        return reply

    def GetModelStatus(self, request, context):
        try:
            version = _requested_version(request.model_spec)
            _check_model(request.model_spec.name, version)
        except _Refusal as refusal:
            self._abort(context, refusal)
        reply = self.pb.get_model_status_pb2.GetModelStatusResponse()
        status = reply.model_version_status.add()
        status.version = MODEL_VERSION
        status.state = self.pb.get_model_status_pb2.ModelVersionStatus.AVAILABLE
        return reply


def start_grpc(behaviour: Behaviour, port: int) -> grpc.Server:
    pb = protos.load()
    # The generated base classes answer UNIMPLEMENTED for the methods the fake leaves out.
    servicer_class = type(
        "FakeServicer",
        (
            _GrpcServicer,
            pb.prediction_service_pb2_grpc.PredictionServiceServicer,
            pb.model_service_pb2_grpc.ModelServiceServicer,
        ),
        {},
    )
    servicer = servicer_class(behaviour)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    prediction = pb.prediction_service_pb2_grpc
    models = pb.model_service_pb2_grpc
    prediction.add_PredictionServiceServicer_to_server(servicer, server)
    models.add_ModelServiceServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server


def start_rest(behaviour: Behaviour, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # keep test output clean
            pass

        def _reply(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _route(self) -> tuple[str, int | None, str]:
            path, _, verb = self.path.partition(":")
            parts = path.strip("/").split("/")
            if len(parts) < 3 or parts[:2] != ["v1", "models"]:
                raise _Refusal("NOT_FOUND", f"Malformed request: {self.path}")
            version = None
            rest = parts[3:]
            if rest[:1] == ["versions"] and len(rest) >= 2:
                version, rest = int(rest[1]), rest[2:]
            elif rest[:1] == ["labels"] and len(rest) >= 2:
                version, rest = _label_version(rest[1]), rest[2:]
            return parts[2], version, verb or "/".join(rest)

        def do_GET(self) -> None:
            try:
                name, version, what = self._route()
                _check_model(name, version)
            except _Refusal as refusal:
                return self._reply(_HTTP[refusal.code], {"error": refusal.message})
            if what == "metadata":
                return self._reply(
                    200,
                    {
                        "model_spec": {
                            "name": name,
                            "signature_name": "",
                            "version": str(MODEL_VERSION),
                        },
                        "metadata": {
                            "signature_def": {
                                "signature_def": {"serving_default": _signature_json()}
                            }
                        },
                    },
                )
            status = {"error_code": "OK", "error_message": ""}
            self._reply(
                200,
                {
                    "model_version_status": [
                        {"version": str(MODEL_VERSION), "state": "AVAILABLE", "status": status}
                    ]
                },
            )

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            try:
                if behaviour.take_failure():
                    raise _Refusal("UNAVAILABLE", "fake server: try again")
                name, version, verb = self._route()
                _check_model(name, version)
                if verb != "predict":
                    raise _Refusal("NOT_FOUND", f"unknown verb {verb}")
                request = json.loads(body)
                columnar = "inputs" in request  # TF Serving's two request forms
                if columnar:
                    instances = request["inputs"]
                    if isinstance(instances, dict):
                        instances = instances["images"]
                else:
                    instances = request["instances"]
                    if instances and isinstance(instances[0], dict):
                        instances = [row["images"] for row in instances]
                images = np.asarray(instances)
                if (
                    images.dtype.kind not in "iu"
                    or images.min(initial=0) < 0
                    or images.max(initial=0) > 255
                ):
                    raise _Refusal("INVALID_ARGUMENT", "images must be uint8")
                images = images.astype(np.uint8)
                _check_images(images)
            except _Refusal as refusal:
                return self._reply(_HTTP[refusal.code], {"error": refusal.message})
            with behaviour.lock:
                behaviour.batch_sizes.append(len(images))
                cut = behaviour.cut_next > 0
                behaviour.cut_next -= cut
            if cut:  # a server that dies mid-reply: the length promised, half of it sent
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "4096")
                self.end_headers()
                self.wfile.write(b'{"predictions": [')
                self.wfile.flush()
                self.close_connection = True
                return None
            outputs = fake_predict(images)
            if columnar:  # the reply mirrors the request's form
                columns = {
                    "probabilities": outputs["probabilities"].tolist(),
                    "class_ids": outputs["class_ids"].tolist(),
                    "classes": [name.decode() for name in outputs["classes"]],
                }
                return self._reply(200, {"outputs": columns})
            rows = [
                {
                    "probabilities": outputs["probabilities"][i].tolist(),
                    "class_ids": int(outputs["class_ids"][i]),
                    "classes": outputs["classes"][i].decode(),
                }
                for i in range(len(images))
            ]
            self._reply(200, {"predictions": rows})

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
