"""Prometheus text rendering of the server's metrics."""

from __future__ import annotations

from serving.metrics import BUCKETS, Metrics


def samples(text: str) -> dict[str, float]:
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in lines}


def test_request_counts_latency_histogram_and_states():
    metrics = Metrics()
    metrics.request("mnist", 2, "Predict", "REST", "OK", 0.000_05)  # 50 us
    metrics.request("mnist", 2, "Predict", "REST", "OK", 0.002)  # 2000 us
    metrics.request("mnist", None, "Predict", "GRPC", "NOT_FOUND", 0.000_01)
    metrics.request("mnist", None, "GetModelStatus", "REST", "OK", 0.000_01)
    metrics.state("mnist", 2, "AVAILABLE")
    metrics.load_attempt("/m/mnist/2", "success")
    found = samples(metrics.render())

    assert found[':tensorflow:serving:request_count{model_name="mnist",status="OK"}'] == 2
    assert found[':tensorflow:serving:request_count{model_name="mnist",status="NOT_FOUND"}'] == 1
    key = 'model_name="mnist",API="Predict",entrypoint="REST"'
    assert found[f":tensorflow:serving:request_latency_count{{{key}}}"] == 2
    assert found[f":tensorflow:serving:request_latency_sum{{{key}}}"] == 2050
    # Cumulative buckets: 50 us falls in le=58.32 (10 * 1.8^3), 2000 us in le=3400.56...
    assert found[f':tensorflow:serving:request_latency_bucket{{{key},le="10"}}'] == 0
    # Limits as TF Serving's exporter writes them (six significant digits).
    assert found[f':tensorflow:serving:request_latency_bucket{{{key},le="58.32"}}'] == 1
    assert found[f':tensorflow:serving:request_latency_bucket{{{key},le="1.47476e+09"}}'] == 2
    assert found[f':tensorflow:serving:request_latency_bucket{{{key},le="+Inf"}}'] == 2
    counts = [
        value
        for name, value in found.items()
        if name.startswith(f":tensorflow:serving:request_latency_bucket{{{key}")
    ]
    assert counts == sorted(counts) and len(counts) == len(BUCKETS) + 1
    assert (
        found[
            ':local_server:request_count{model_name="mnist",version="",API="GetModelStatus",'
            'entrypoint="REST",status="OK"}'
        ]
        == 1
    )
    assert (
        found[':local_server:model_version_state{model_name="mnist",version="2",state="AVAILABLE"}']
        == 1
    )
    assert (
        found[
            ':tensorflow:cc:saved_model:load_attempt_count{model_path="/m/mnist/2",status="success"}'
        ]
        == 1
    )
