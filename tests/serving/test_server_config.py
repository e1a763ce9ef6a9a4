"""Reading TF Serving's text-format config files, including the stock ones in serving/."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.config import (
    ConfigError,
    VersionPolicy,
    read_batching_parameters_file,
    read_model_config_file,
    read_monitoring_config_file,
)

SERVING = Path(__file__).resolve().parents[2] / "serving"


def write(tmp_path: Path, text: str, name: str = "file.config") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_model_config_policies_and_labels(tmp_path):
    path = write(
        tmp_path,
        """
        model_config_list {
          config { name: "a" base_path: "/m/a" model_platform: "tensorflow"
                   model_version_policy { latest { num_versions: 2 } }
                   version_labels { key: "stable" value: 1 }
                   version_labels { key: "canary" value: 2 } }
          config { name: "b" base_path: "/m/b" model_version_policy { all {} } }
          config { name: "c" base_path: "/m/c"
                   model_version_policy { specific { versions: 3 versions: 5 } } }
          config { name: "d" base_path: "/m/d" }
        }
        """,
    )
    a, b, c, d = read_model_config_file(path)
    assert (a.name, a.base_path, a.policy) == ("a", "/m/a", VersionPolicy("latest", 2))
    assert a.labels == {"stable": 1, "canary": 2}
    assert b.policy.kind == "all"
    assert c.policy == VersionPolicy("specific", versions=frozenset({3, 5}))
    assert d.policy == VersionPolicy("latest", 1)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model_config_list { config { name: 'a' base_path: '/x' } ", "Invalid protobuf file"),
        ("model_config_list { config { nam: 'a' } }", "Invalid protobuf file"),
        (
            "model_config_list { config { name: 'a' base_path: '/x' }"
            " config { name: 'a' base_path: '/y' } }",
            "multiple times",
        ),
        ("model_config_list { config { name: 'a' } }", "has no base_path"),
        (
            "model_config_list { config { name: 'a' base_path: '/x' model_platform: 'onnx' } }",
            "not supported",
        ),
    ],
)
def test_model_config_errors(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        read_model_config_file(write(tmp_path, text))


def test_version_policy_selection():
    found = [1, 2, 3, 7]
    assert VersionPolicy("latest", 1).select(found) == {7}
    assert VersionPolicy("latest", 2).select(found) == {3, 7}
    assert VersionPolicy("all").select(found) == {1, 2, 3, 7}
    assert VersionPolicy("specific", versions=frozenset({2, 9})).select(found) == {2}
    assert VersionPolicy("latest", 3).select([]) == set()


def test_monitoring_config(tmp_path):
    on = write(tmp_path, 'prometheus_config { enable: true, path: "/metrics/x" }')
    assert read_monitoring_config_file(on) == "/metrics/x"
    default_path = write(tmp_path, "prometheus_config { enable: true }", "d.config")
    assert read_monitoring_config_file(default_path) == "/monitoring/prometheus/metrics"
    off = write(tmp_path, "prometheus_config { enable: false }", "off.config")
    assert read_monitoring_config_file(off) is None
    with pytest.raises(ConfigError, match="Invalid protobuf file"):
        read_monitoring_config_file(write(tmp_path, "prometheus { }", "bad.config"))


def test_batching_parameters(tmp_path):
    assert read_batching_parameters_file(None, default_threads=3).num_batch_threads == 3
    path = write(
        tmp_path,
        "max_batch_size { value: 8 } batch_timeout_micros { value: 500 }"
        " allowed_batch_sizes: 4 allowed_batch_sizes: 8",
    )
    config = read_batching_parameters_file(path, default_threads=2)
    assert (config.max_batch_size, config.batch_timeout_micros) == (8, 500)
    assert config.allowed_batch_sizes == (4, 8)
    assert config.max_enqueued_batches == 100  # TF Serving's default
    with pytest.raises(ConfigError, match="end with max_batch_size"):
        read_batching_parameters_file(
            write(tmp_path, "max_batch_size { value: 8 } allowed_batch_sizes: 4", "b.config"), 1
        )
    with pytest.raises(ConfigError, match="Invalid protobuf file"):
        read_batching_parameters_file(write(tmp_path, "max_batch_size: 8", "c.config"), 1)


def test_stock_config_files_parse():
    (model,) = read_model_config_file(SERVING / "models.config")
    assert model.name == "mnist"
    assert model.policy == VersionPolicy("specific", versions=frozenset({1}))
    assert set(model.labels) == {"stable", "canary"}
    assert read_monitoring_config_file(SERVING / "monitoring.config")
    assert read_batching_parameters_file(SERVING / "batching.config", 1).max_batch_size >= 1
