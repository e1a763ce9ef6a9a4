"""The server's life: hot swap under load, failed loads, config reload, metrics, SIGTERM."""

from __future__ import annotations

import io
import signal
import threading
import time
from base64 import b64encode
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
from harness import local_server
from serving_support import publish, version_states, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MODEL = "digits"


def write_config(path: Path, base: Path, labels: dict[str, int] | None = None) -> Path:
    label_text = "".join(
        f'    version_labels {{ key: "{k}" value: {v} }}\n' for k, v in (labels or {}).items()
    )
    path.write_text(
        "model_config_list {\n  config {\n"
        f'    name: "{MODEL}"\n    base_path: "{base}"\n    model_platform: "tensorflow"\n'
        "    model_version_policy { latest { num_versions: 2 } }\n"
        f"{label_text}  }}\n}}\n"
    )
    return path


def which_version(probabilities: np.ndarray, contract_versions) -> int | None:
    for version, (_, expected) in contract_versions.items():
        if np.allclose(probabilities, expected[: len(probabilities)], atol=1e-6):
            return version
    return None


class Traffic:
    """Sends predicts continuously over REST and gRPC and records which version answered."""

    def __init__(self, server, images: np.ndarray, contract_versions) -> None:
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

        self.server, self.images, self.versions = server, images, contract_versions
        self.failures: list[str] = []
        self.answered: list[int] = []
        self._stop = threading.Event()
        self._request = predict_pb2.PredictRequest()
        self._request.model_spec.name = MODEL
        self._request.inputs["images"].CopyFrom(tf.make_tensor_proto(images))
        self._channel = grpc.insecure_channel(server.grpc_target)
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)
        self._channel.close()

    def _run(self) -> None:
        import tensorflow as tf

        session = requests.Session()
        url = f"{self.server.rest_url}/v1/models/{MODEL}:predict"
        body = {"instances": self.images.tolist()}
        while not self._stop.is_set():
            try:
                reply = session.post(url, json=body, timeout=30)
                if reply.status_code != 200:
                    self.failures.append(f"REST {reply.status_code}: {reply.text[:200]}")
                    continue
                probabilities = np.array([p["probabilities"] for p in reply.json()["predictions"]])
                self._record(probabilities, "REST")
                response = self._stub.Predict(self._request, timeout=30)
                self._record(tf.make_ndarray(response.outputs["probabilities"]), "gRPC")
            except (requests.RequestException, grpc.RpcError) as error:
                self.failures.append(repr(error))

    def _record(self, probabilities: np.ndarray, transport: str) -> None:
        version = which_version(probabilities, self.versions)
        if version is None:
            self.failures.append(f"{transport} answer matches no published version")
        else:
            self.answered.append(version)


def test_hot_swap_failed_load_reload_and_metrics(tmp_path, contract_versions, test_digits):
    from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc
    from tensorflow_serving.config import model_server_config_pb2

    base = tmp_path / "repository" / MODEL
    base.mkdir(parents=True)
    publish(contract_versions[1][0], base, 1)
    config = write_config(tmp_path / "models.config", base)
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text(
        'prometheus_config { enable: true path: "/monitoring/prometheus/metrics" }'
    )
    with local_server(
        f"--model_config_file={config}",
        "--file_system_poll_wait_seconds=1",
        f"--monitoring_config_file={monitoring}",
        log_dir=tmp_path,
        model_name=MODEL,
    ) as server:
        with Traffic(server, test_digits[:4], contract_versions) as traffic:
            wait_for(lambda: len(traffic.answered) >= 4, what="first answers")
            publish(contract_versions[2][0], base, 2)
            wait_for(lambda: 2 in traffic.answered, what="version 2 answering")
            states = version_states(server.rest_url, MODEL)
            assert {v: s["state"] for v, s in states.items()} == {1: "AVAILABLE", 2: "AVAILABLE"}
            publish(contract_versions[3][0], base, 3)
            wait_for(lambda: 3 in traffic.answered, what="version 3 answering")
            wait_for(
                lambda: version_states(server.rest_url, MODEL)[1]["state"] == "END",
                what="version 1 unloaded by latest { num_versions: 2 }",
            )
            time.sleep(1)
        assert not traffic.failures, traffic.failures[:5]
        assert traffic.answered == sorted(traffic.answered), "answers went back to an old version"
        states = {v: s["state"] for v, s in version_states(server.rest_url, MODEL).items()}
        assert states == {1: "END", 2: "AVAILABLE", 3: "AVAILABLE"}

        # A version that cannot load ends in END with its error; the others keep serving.
        broken = base / ".staging-4"
        broken.mkdir()
        (broken / "saved_model.pb").write_bytes(b"this is not a protobuf")
        broken.rename(base / "4")
        wait_for(
            lambda: version_states(server.rest_url, MODEL).get(4, {}).get("state") == "END",
            what="version 4 to fail",
        )
        failed = version_states(server.rest_url, MODEL)[4]["status"]
        assert failed["error_code"] == "DATA_LOSS"
        assert "saved_model.pb" in failed["error_message"]
        reply = requests.post(
            f"{server.rest_url}/v1/models/{MODEL}:predict",
            json={"instances": test_digits[:2].tolist()},
            timeout=30,
        )
        assert reply.status_code == 200
        answered = np.array([p["probabilities"] for p in reply.json()["predictions"]])
        assert which_version(answered, contract_versions) == 3

        # HandleReloadConfigRequest: a label on an AVAILABLE version works at once; on a
        # version that is not loaded it is refused with FAILED_PRECONDITION.
        with grpc.insecure_channel(server.grpc_target) as channel:
            stub = model_service_pb2_grpc.ModelServiceStub(channel)
            request = model_management_pb2.ReloadConfigRequest()
            entry = request.config.model_config_list.config.add()
            entry.name, entry.base_path, entry.model_platform = MODEL, str(base), "tensorflow"
            entry.model_version_policy.latest.num_versions = 2
            entry.version_labels["stable"] = 3
            response = stub.HandleReloadConfigRequest(request, timeout=30)
            assert response.status.error_code == 0
            reply = requests.get(
                f"{server.rest_url}/v1/models/{MODEL}/labels/stable/metadata", timeout=10
            )
            assert reply.json()["model_spec"]["version"] == "3"
            entry.version_labels["stable"] = 1
            with pytest.raises(grpc.RpcError) as caught:
                stub.HandleReloadConfigRequest(request, timeout=30)
            assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "version 1 of model digits" in caught.value.details()
            unsupported = model_management_pb2.ReloadConfigRequest(
                config=model_server_config_pb2.ModelServerConfig()
            )
            with pytest.raises(grpc.RpcError) as caught:
                stub.HandleReloadConfigRequest(unsupported, timeout=30)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT

        metrics = requests.get(f"{server.rest_url}/monitoring/prometheus/metrics", timeout=10).text
        assert f':tensorflow:serving:request_count{{model_name="{MODEL}",status="OK"}}' in metrics
        assert ':tensorflow:cc:saved_model:load_attempt_count{model_path="' in metrics
        assert 'status="fail"' in metrics
        assert (
            f':local_server:model_version_state{{model_name="{MODEL}",version="3",'
            'state="AVAILABLE"} 1'
        ) in metrics
        assert 'entrypoint="GRPC"' in metrics and 'entrypoint="REST"' in metrics
    log = server.log()
    assert "event=version_loaded model=digits version=3" in log
    assert "event=version_load_failed" in log


def test_sigterm_finishes_in_flight_requests(tmp_path, contract_versions, test_digits):
    """Requests wait 2 s in the batching queue; SIGTERM arrives meanwhile; all are answered.
    A bad PNG merged into the same batch as good ones fails alone."""
    import tensorflow as tf
    from PIL import Image
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    base = tmp_path / MODEL
    base.mkdir()
    publish(contract_versions[1][0], base, 1)
    batching = tmp_path / "batching.config"
    batching.write_text("max_batch_size { value: 1000 } batch_timeout_micros { value: 2000000 }")
    results: list[str] = []

    def rest_call(url: str) -> None:
        try:
            reply = requests.post(url, json={"instances": test_digits[:1].tolist()}, timeout=30)
            results.append(f"REST {reply.status_code}")
        except requests.RequestException as error:
            results.append(repr(error))

    def png_call(url: str, data: bytes) -> None:
        body = {"signature_name": "serving_bytes", "instances": [{"b64": b64encode(data).decode()}]}
        try:
            reply = requests.post(url, json=body, timeout=30)
            results.append(f"PNG {reply.status_code} {reply.json().get('error', '')}")
        except requests.RequestException as error:
            results.append(repr(error))

    buffer = io.BytesIO()
    Image.fromarray(test_digits[0, ..., 0]).save(buffer, format="PNG")

    def grpc_call(target: str) -> None:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = MODEL
        request.inputs["images"].CopyFrom(tf.make_tensor_proto(test_digits[:1]))
        with grpc.insecure_channel(target) as channel:
            try:
                prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, 30)
                results.append("gRPC OK")
            except grpc.RpcError as error:
                results.append(f"gRPC {error.code()}")

    with local_server(
        f"--model_name={MODEL}",
        f"--model_base_path={base}",
        "--enable_batching",
        f"--batching_parameters_file={batching}",
        log_dir=tmp_path,
        model_name=MODEL,
    ) as server:
        url = f"{server.rest_url}/v1/models/{MODEL}:predict"
        threads = [threading.Thread(target=rest_call, args=(url,)) for _ in range(3)]
        threads += [
            threading.Thread(target=grpc_call, args=(server.grpc_target,)) for _ in range(2)
        ]
        threads += [
            threading.Thread(target=png_call, args=(url, data))
            for data in (buffer.getvalue(), b"not an image", buffer.getvalue())
        ]
        for thread in threads:
            thread.start()
        time.sleep(0.7)
        server.process.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(30)
        assert server.process.wait(timeout=30) == 0, server.log()[-3000:]
    failed = [result for result in results if result.startswith("PNG 400")]
    assert len(failed) == 1 and "Unknown image file format." in failed[0], results
    answered = sorted(result for result in results if result not in failed)
    assert answered == sorted(["REST 200"] * 3 + ["gRPC OK"] * 2 + ["PNG 200 "] * 2), results
    assert "event=shutdown_started signal=SIGTERM" in server.log()
    assert "event=server_stopped exit_code=0" in server.log()
