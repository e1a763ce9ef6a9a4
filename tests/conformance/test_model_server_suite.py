"""What TF Serving's own model-server suite checks, restated on models made here.

TF Serving's tensorflow_serving/model_servers/tensorflow_model_server_test.py (with
test_util/tensorflow_model_server_test_base.py) starts the real binary on its test data and
talks to it over gRPC and REST. Run unmodified against this server (shared/tools/tfs-suite),
it found differences our other tests had missed; each is stated here, in our words and on our
own models (tests/conformance/suite_models.py), so that CI, which has no copy of TF Serving,
keeps them fixed. The TF Serving source each expectation comes from is named in the test.

These tests start their own servers with the suite's flags, so they skip against an external
target.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
from conformance_support import assert_rpc_error, external_target, typed_tensor
from harness import REPO_ROOT, ServerProcess, free_port, local_server, run_python

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(external_target(), reason="starts its own servers with the suite's flags"),
]

DT_FLOAT = 1
VERSION = 123  # the models' folders are named 00000123


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("suite-models")
    result = run_python("-m", "tests.conformance.suite_models", str(root), timeout=300)
    if result.returncode != 0:
        pytest.fail(f"suite_models failed:\n{result.stderr[-3000:]}")
    return root


def config_text(models: Path, names: list[str]) -> str:
    entries = "".join(
        f'  config {{ name: "{name}" base_path: "{models / name}" model_platform: "tensorflow" }}\n'
        for name in names
    )
    return f"model_config_list {{\n{entries}}}\n"


@pytest.fixture(scope="module")
def socket_dir() -> Iterator[Path]:
    # A Unix socket path must fit in 108 bytes: pytest's tmp_path can be longer.
    folder = Path(tempfile.mkdtemp(prefix="tfs-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def server(models: Path, socket_dir: Path, tmp_path_factory) -> Iterator[ServerProcess]:
    """One server with the flags the suite's RunServer passes to every server it starts."""
    config = models / "models.config"
    config.write_text(config_text(models, ["half_plus_two", "half_plus_three", "tf2", "tflite"]))
    log_dir = tmp_path_factory.mktemp("suite-logs")
    with local_server(
        f"--model_config_file={config}",
        f"--grpc_socket_path={socket_dir / 'tf-serving.sock'}",
        # grpc.max_receive_message_length is observable: a larger request is refused.
        "--grpc_channel_arguments=grpc.max_connection_age_ms=2000,grpc.lb_policy_name=grpclb,"
        "grpc.so_reuseaddr=1,grpc.max_receive_message_length=65536",
        "--prefer_tflite_model=true",
        "--rest_api_timeout_in_ms=5000",
        log_dir=log_dir,
        model_name="tflite",
    ) as started:
        for name in ("half_plus_two", "half_plus_three", "tf2"):
            status = requests.get(f"{started.rest_url}/v1/models/{name}", timeout=10).json()
            states = [entry["state"] for entry in status.get("model_version_status", [])]
            assert states == ["AVAILABLE"], f"{name}: {status}\n{started.log()[-3000:]}"
        yield started


def predict_stub(target: str):
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    return prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(target))


def predict_x(target: str, model: str, values, shape, signature: str = "", outputs=()):
    """The suite's VerifyPredictRequest: x as float_val with the given shape."""
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    request.inputs["x"].CopyFrom(typed_tensor(values, shape, DT_FLOAT))
    request.output_filter.extend(outputs)
    return predict_stub(target).Predict(request, timeout=20)


def test_zero_padded_version_folders_are_served(server: ServerProcess):
    # file_system_storage_path_source.cc: 00000123 is version 123, loaded from that folder.
    status = requests.get(f"{server.rest_url}/v1/models/half_plus_two", timeout=10).json()
    assert status["model_version_status"][0]["version"] == str(VERSION)
    reply = predict_x(server.grpc_target, "half_plus_two", [2.0], [1, 1])
    assert reply.model_spec.version.value == VERSION


def test_shapes_are_not_checked_against_the_signature(server: ServerProcess):
    # predict_util.cc feeds the tensors to Session::Run as they are; the signature says
    # [-1, 1] but the graph's ops take [3] (the suite's testPredictREST sends exactly this).
    url = f"{server.rest_url}/v1/models/half_plus_two:predict"
    reply = requests.post(url, json={"instances": [2.0, 3.0, 4.0]}, timeout=10)
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"predictions": [3.0, 3.5, 4.0]}
    columnar = requests.post(url, json={"inputs": [2.0, 3.0, 4.0]}, timeout=10)
    assert columnar.json() == {"outputs": [3.0, 3.5, 4.0]}
    reply = predict_x(server.grpc_target, "half_plus_two", [2.0], [1], outputs=["y"])
    assert list(reply.outputs["y"].float_val) == [3.0]


def test_a_shape_the_graph_refuses_is_invalid_argument_with_the_ops_message(
    server: ServerProcess,
):
    # The tflite model is [1, 1] -> [1, 1] and resizes to what it is fed; a [2, 3] feed is
    # fine, a rank-3 one too; what no op accepts is a wrong dtype, refused before the run
    # with TF Serving's "Expects arg[0] to be float but string is provided".
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half_plus_two"
    request.inputs["x"].CopyFrom(typed_tensor([b"a"], [1], 7))
    assert_rpc_error(
        lambda: predict_stub(server.grpc_target).Predict(request, timeout=20),
        "INVALID_ARGUMENT",
        r"Expects arg\[0\] to be float but string is provided",
    )


def test_a_signature_declaring_a_scalar_input_loads_and_serves(server: ServerProcess):
    # saved_model_half_plus_three declares x as rank 0; TF Serving's SavedModel loader runs
    # the graph by tensor name, so the declared shape never stops it (testGoodModelConfig).
    reply = predict_x(server.grpc_target, "half_plus_three", [2.0], [1])
    assert list(reply.outputs["y"].float_val) == [4.0]


def test_unknown_rank_input_and_scalar_output_over_grpc(server: ServerProcess):
    import tensorflow as tf

    # test_tf_saved_model_save: TensorSpec(None) input, y = 3 * 2 * x.
    reply = predict_x(server.grpc_target, "tf2", [2.0], [1])
    assert list(reply.outputs["y"].float_val) == [12.0]
    # test_tf_saved_model_save_multiple_signatures: a 0-d output is one float_val and a shape
    # with no dims (Tensor::AsProtoField), which tf.make_ndarray turns into a scalar.
    reply = predict_x(server.grpc_target, "tf2", [2.0], [1], signature="constant", outputs=["y"])
    proto = reply.outputs["y"]
    assert list(proto.float_val) == [1.0]
    assert proto.HasField("tensor_shape") and len(proto.tensor_shape.dim) == 0
    assert tf.make_ndarray(proto) == np.float32(1.0)
    assert reply.model_spec.signature_name == "constant"


def multi_inference_request(tasks):
    from tensorflow_serving.apis import inference_pb2

    request = inference_pb2.MultiInferenceRequest()
    for model, signature, method in tasks:
        task = request.tasks.add()
        task.model_spec.name = model
        task.model_spec.signature_name = signature
        task.method_name = method
    example = request.input.example_list.examples.add()
    example.features.feature["x"].float_list.value.extend([2.0])
    return request


REGRESS, CLASSIFY = "tensorflow/serving/regress", "tensorflow/serving/classify"


def test_multi_inference_runs_regress_and_classify_over_one_example_set(server: ServerProcess):
    # multi_inference.cc (the suite's testMultiInference).
    request = multi_inference_request(
        [
            ("half_plus_two", "regress_x_to_y", REGRESS),
            ("half_plus_two", "classify_x_to_y", CLASSIFY),
        ]
    )
    reply = predict_stub(server.grpc_target).MultiInference(request, timeout=20)
    assert len(reply.results) == 2
    assert reply.results[0].regression_result.regressions[0].value == 3.0
    assert reply.results[1].classification_result.classifications[0].classes[0].score == 3.0
    for result, signature in zip(reply.results, ("regress_x_to_y", "classify_x_to_y"), strict=True):
        assert (result.model_spec.name, result.model_spec.version.value) == (
            "half_plus_two",
            VERSION,
        )
        assert result.model_spec.signature_name == signature


@pytest.mark.parametrize(
    ("tasks", "code", "pattern"),
    [
        (
            [("half_plus_two", "regress_x_to_y", REGRESS)] * 2,
            "INVALID_ARGUMENT", "Duplicate evaluation of signature: regress_x_to_y",
        ),
        (
            [("half_plus_two", "regress_x_to_y", REGRESS), ("tf2", "classify_x_to_y", CLASSIFY)],
            "INVALID_ARGUMENT", "must access the same model name",
        ),
        (
            [("half_plus_two", "serving_default", "tensorflow/serving/predict")],
            "UNIMPLEMENTED", "Unsupported signature method_name: tensorflow/serving/predict",
        ),
        (
            [("half_plus_two", "nope", REGRESS)],
            "INVALID_ARGUMENT", "Requested signature not found in model graph: nope",
        ),
    ],
)  # fmt: skip
def test_multi_inference_refusals(server: ServerProcess, tasks, code, pattern):
    request = multi_inference_request(tasks)
    assert_rpc_error(
        lambda: predict_stub(server.grpc_target).MultiInference(request, timeout=20), code, pattern
    )


def test_grpc_on_a_unix_socket(server: ServerProcess, socket_dir: Path):
    # server.cc: --grpc_socket_path adds a "unix:<path>" listening port (testPredictUDS).
    reply = predict_x(f"unix:{socket_dir / 'tf-serving.sock'}", "half_plus_two", [2.0], [1, 1])
    assert list(reply.outputs["y"].float_val) == [3.0]


def test_grpc_channel_arguments_are_applied_to_the_server(server: ServerProcess):
    # server.cc parseGrpcChannelArgs: key=value pairs, ints as ints, handed to the builder.
    # grpc.max_receive_message_length=65536 is in force: a 100 KB request is refused.
    assert_rpc_error(
        lambda: predict_x(server.grpc_target, "half_plus_two", [1.0] * 25_000, [25_000, 1]),
        "RESOURCE_EXHAUSTED",
        "",
    )


def test_prefer_tflite_model_serves_model_tflite(server: ServerProcess, models: Path):
    # tflite_session.cc: without SignatureDefs in the file, one serving_default signature is
    # generated, keyed by the TF Lite tensor names (":0" dropped); inputs are resized to the
    # fed shape, so a [1] feed to a [1, 1] model answers [1].
    names = json.loads((models / "models.json").read_text())["tflite"]
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "tflite"
    request.inputs[names["inputs"][0]].CopyFrom(typed_tensor([2.0], [1], DT_FLOAT))
    reply = predict_stub(server.grpc_target).Predict(request, timeout=20)
    assert list(reply.outputs[names["outputs"][0]].float_val) == [3.0]
    metadata = requests.get(f"{server.rest_url}/v1/models/tflite/metadata", timeout=10).json()
    signature = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert set(signature["inputs"]) == set(names["inputs"])
    assert signature["method_name"] == "tensorflow/serving/predict"


def test_without_prefer_tflite_a_tflite_only_version_does_not_load(models: Path, tmp_path: Path):
    # Without --prefer_tflite_model the version must be a SavedModel (saved_model.pb).
    with local_server(
        "--model_name=tflite", f"--model_base_path={models / 'tflite'}", log_dir=tmp_path
    ) as started:
        entry: dict = {}
        deadline = time.monotonic() + 120
        while entry.get("state") != "END" and time.monotonic() < deadline:
            time.sleep(0.2)
            try:
                status = requests.get(f"{started.rest_url}/v1/models/tflite", timeout=10)
            except requests.ConnectionError:  # not listening yet
                continue
            if status.ok:
                entry = status.json()["model_version_status"][0]
        assert entry["state"] == "END"
        assert "SavedModel" in entry["status"]["error_message"]


def test_the_profiler_service_answers_a_trace(server: ServerProcess, tmp_path: Path):
    # server.cc registers tsl's ProfilerService on the gRPC port (--enable_profiler, on by
    # default); the suite traces it with profiler_client.trace (test_profiler_service_...).
    code = (
        "import sys, tensorflow as tf\n"
        "tf.profiler.experimental.client.trace('grpc://' + sys.argv[1], sys.argv[2], 300)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, server.grpc_target, str(tmp_path / "logs")],
        capture_output=True, text=True, timeout=120, cwd=REPO_ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    written = list((tmp_path / "logs").rglob("*.xplane.pb"))
    assert written and written[0].stat().st_size > 0, list((tmp_path / "logs").rglob("*"))


def test_a_malformed_config_file_names_the_text_format_error(tmp_path: Path):
    # The suite's testBadModelConfig greps stderr for protobuf's text-parser line.
    config = tmp_path / "bad.config"
    config.write_text("improperly formatted file")
    result = subprocess.run(
        [sys.executable, "-m", "serving", f"--port={free_port()}", f"--model_config_file={config}"],
        capture_output=True, text=True, timeout=120, cwd=REPO_ROOT,
    )  # fmt: skip
    assert result.returncode != 0
    assert re.search(
        r"Error parsing text-format tensorflow\.serving\.ModelServerConfig: 1:1: ", result.stderr
    ), result.stderr
