"""serving/*.config and serving/compose.yaml: parse with TF Serving's own schemas, check values.

ModelServerConfig comes from tensorflow-serving-api. That wheel ships neither
monitoring_config.proto nor session_bundle_config.proto (BatchingParameters), so their schemas are
declared below with the field names, numbers and types of TF Serving's .proto files
(tensorflow_serving/config/monitoring_config.proto,
tensorflow_serving/servables/tensorflow/session_bundle_config.proto): a misspelt field or a value
of the wrong type fails to parse here exactly as it would in tensorflow_model_server.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    text_format,
    wrappers_pb2,
)

SERVING = Path(__file__).resolve().parents[2] / "serving"
PYPROJECT = SERVING.parent / "pyproject.toml"

# Every flag of tensorflow_model_server 2.x (tensorflow_serving/model_servers/main.cc); the
# compose file may use only these.
MODEL_SERVER_FLAGS = {
    "port", "grpc_socket_path", "rest_api_port", "rest_api_num_threads",
    "rest_api_timeout_in_ms", "rest_api_enable_cors_support", "enable_batching",
    "allow_version_labels_for_unavailable_models",
    "batching_parameters_file", "enable_per_model_batching_parameters", "model_config_file",
    "model_config_file_poll_wait_seconds", "model_name", "model_base_path", "num_load_threads",
    "num_unload_threads", "max_num_load_retries", "load_retry_interval_micros",
    "file_system_poll_wait_seconds", "flush_filesystem_caches", "tensorflow_session_parallelism",
    "tensorflow_session_config_file", "tensorflow_intra_op_parallelism",
    "tensorflow_inter_op_parallelism", "use_alts_credentials", "ssl_config_file",
    "platform_config_file", "per_process_gpu_memory_fraction", "saved_model_tags",
    "grpc_channel_arguments", "grpc_max_threads", "enable_model_warmup",
    "num_request_iterations_for_warmup", "version", "monitoring_config_file",
    "remove_unused_fields_from_bundle_metagraph", "prefer_tflite_model", "num_tflite_pools",
    "num_tflite_interpreters_per_pool", "enable_signature_method_name_check",
    "xla_cpu_compilation_enabled", "enable_profiler", "thread_pool_factory_config_file",
}  # fmt: skip


def _schema_classes() -> dict[str, type]:
    """MonitoringConfig and BatchingParameters message classes in a private descriptor pool."""
    field = descriptor_pb2.FieldDescriptorProto
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    schema = descriptor_pb2.FileDescriptorProto(
        name="conformance/tf_serving_configs.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    prometheus = schema.message_type.add(name="PrometheusConfig")
    prometheus.field.add(name="enable", number=1, type=field.TYPE_BOOL, label=field.LABEL_OPTIONAL)
    prometheus.field.add(name="path", number=2, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    monitoring = schema.message_type.add(name="MonitoringConfig")
    monitoring.field.add(
        name="prometheus_config",
        number=1,
        type=field.TYPE_MESSAGE,
        label=field.LABEL_OPTIONAL,
        type_name=".tensorflow.serving.PrometheusConfig",
    )
    batching = schema.message_type.add(name="BatchingParameters")
    wrapped = [
        ("max_batch_size", 1, "Int64Value"),
        ("batch_timeout_micros", 2, "Int64Value"),
        ("max_enqueued_batches", 3, "Int64Value"),
        ("num_batch_threads", 4, "Int64Value"),
        ("thread_pool_name", 5, "StringValue"),
    ]
    for name, number, wrapper in wrapped:
        batching.field.add(
            name=name,
            number=number,
            type=field.TYPE_MESSAGE,
            label=field.LABEL_OPTIONAL,
            type_name=f".google.protobuf.{wrapper}",
        )
    batching.field.add(
        name="allowed_batch_sizes", number=6, type=field.TYPE_INT64, label=field.LABEL_REPEATED
    )
    batching.field.add(
        name="pad_variable_length_inputs",
        number=7,
        type=field.TYPE_BOOL,
        label=field.LABEL_OPTIONAL,
    )
    pool.Add(schema)
    return {
        name: message_factory.GetMessageClass(
            pool.FindMessageTypeByName(f"tensorflow.serving.{name}")
        )
        for name in ("MonitoringConfig", "BatchingParameters")
    }


SCHEMAS = _schema_classes()


def parse(path: Path, message_class):
    message = message_class()
    text_format.Parse(path.read_text(), message)
    return message


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((SERVING / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def service(compose: dict) -> dict:
    services = compose["services"]
    assert len(services) == 1, f"expected one service, got {list(services)}"
    return next(iter(services.values()))


@pytest.fixture(scope="module")
def flags(service: dict) -> dict[str, str]:
    parsed = {}
    for argument in service["command"]:
        match = re.fullmatch(r"--([a-z0-9_]+)=(.*)", argument)
        assert match, f"flag {argument!r} is not --name=value"
        parsed[match.group(1)] = match.group(2)
    return parsed


def test_models_config_is_a_model_server_config_for_mnist():
    """The template of a repository's rollout state: one version, pinned, both labels on it."""
    from tensorflow_serving.config import model_server_config_pb2

    config = parse(SERVING / "models.config", model_server_config_pb2.ModelServerConfig)
    assert config.WhichOneof("config") == "model_config_list"
    (model,) = config.model_config_list.config
    assert model.name == "mnist"
    assert model.base_path == "/models/mnist"
    assert model.model_platform == "tensorflow"
    assert model.model_version_policy.WhichOneof("policy_choice") == "specific"
    assert list(model.model_version_policy.specific.versions) == [1]
    assert dict(model.version_labels) == {"stable": 1, "canary": 1}


def test_the_rollout_state_a_publish_and_a_canary_write_is_a_model_server_config(tmp_path: Path):
    """What the servers actually read: the file the trainer's first publish and the rollout
    commands write (common.rollout_state), parsed by TF Serving's proto and the local server."""
    from tensorflow_serving.config import model_server_config_pb2

    from common import rollout_state
    from serving.config import VersionPolicy, read_model_config_file

    assert rollout_state.first_version(tmp_path, "mnist", 1, "/models/mnist")
    state = rollout_state.read(tmp_path)
    entry = state.model("mnist")
    canary = rollout_state.ModelEntry(
        entry.name, entry.base_path, pins=(1, 3), labels={"stable": 1, "canary": 3}
    )
    rollout_state.save(tmp_path, state.with_model(canary).moved("mnist", "canary", 1, 3, "canary"))
    path = rollout_state.config_path(tmp_path)
    config = parse(path, model_server_config_pb2.ModelServerConfig)
    (model,) = config.model_config_list.config
    assert list(model.model_version_policy.specific.versions) == [1, 3]
    assert dict(model.version_labels) == {"stable": 1, "canary": 3}
    (served,) = read_model_config_file(path)
    assert served.policy == VersionPolicy("specific", versions=frozenset({1, 3}))
    assert served.labels == {"stable": 1, "canary": 3}


def test_models_config_explains_the_label_rule():
    text = (SERVING / "models.config").read_text()
    assert "--allow_version_labels_for_unavailable_models" in text
    assert "FAILED_PRECONDITION" in text


def test_batching_config_is_a_cpu_starting_point():
    batching = parse(SERVING / "batching.config", SCHEMAS["BatchingParameters"])
    for name in ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches"):
        assert batching.HasField(name), f"batching.config must set {name}"
    assert batching.num_batch_threads.value >= 1
    assert batching.max_batch_size.value >= 1
    assert batching.max_enqueued_batches.value >= 1
    # The batching guide's CPU range for the timeout: 0 to 10 ms.
    assert 0 <= batching.batch_timeout_micros.value <= 10_000
    sizes = list(batching.allowed_batch_sizes)
    if sizes:
        assert sizes == sorted(sizes) and sizes[-1] == batching.max_batch_size.value


def test_monitoring_config_exposes_prometheus():
    monitoring = parse(SERVING / "monitoring.config", SCHEMAS["MonitoringConfig"])
    assert monitoring.prometheus_config.enable is True
    assert monitoring.prometheus_config.path == "/monitoring/prometheus/metrics"


def test_schemas_reject_misspelt_fields():
    """The hand-declared schemas are strict: a typo fails as tensorflow_model_server's would."""
    with pytest.raises(text_format.ParseError):
        text_format.Parse("max_batch_sise { value: 8 }", SCHEMAS["BatchingParameters"]())
    with pytest.raises(text_format.ParseError):
        text_format.Parse("max_batch_size: 8", SCHEMAS["BatchingParameters"]())
    with pytest.raises(text_format.ParseError):
        text_format.Parse("prometheus_config { path: 3 }", SCHEMAS["MonitoringConfig"]())


def test_compose_pins_the_trainers_tensorflow_version(service: dict):
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    pinned = {
        requirement.split("==")[1]
        for requirement in dependencies["train"]
        if requirement.startswith("tensorflow==")
    }
    assert service["image"] == f"tensorflow/serving:{pinned.pop()}"
    assert service["image"] == "tensorflow/serving:2.21.0"


def test_compose_publishes_grpc_and_rest(service: dict, flags: dict[str, str]):
    assert set(service["ports"]) == {"8500:8500", "8501:8501"}
    assert flags["port"] == "8500"
    assert flags["rest_api_port"] == "8501"


def test_compose_mounts_are_read_only(service: dict):
    targets = {}
    for volume in service["volumes"]:
        assert volume["type"] == "bind"
        assert volume.get("read_only") is True, f"{volume['target']} must be read-only"
        targets[volume["target"]] = volume["source"]
    # MODEL_REPOSITORY (make serve sets it), mounted at the same path: models.config names base
    # paths as the trainer and the rollout commands see them on the host.
    repository = "${MODEL_REPOSITORY:?set MODEL_REPOSITORY to the model repository's absolute path}"
    assert targets[repository] == repository
    assert (SERVING / targets["/config"]).resolve() == SERVING


def test_compose_flags(service: dict, flags: dict[str, str]):
    unknown = set(flags) - MODEL_SERVER_FLAGS
    assert not unknown, f"not tensorflow_model_server flags: {unknown}"
    mounted = {volume["target"]: volume["source"] for volume in service["volumes"]}
    # The rollout state is the repository's own file, in the repository's mount.
    assert flags["model_config_file"] == "${MODEL_REPOSITORY}/models.config"
    assert any(target.startswith("${MODEL_REPOSITORY:") for target in mounted)
    for flag, file_name in [
        ("batching_parameters_file", "batching.config"),
        ("monitoring_config_file", "monitoring.config"),
    ]:
        directory, _, name = flags[flag].rpartition("/")
        assert name == file_name, f"--{flag} must point at {file_name}"
        assert (SERVING / mounted[directory] / name).is_file(), f"--{flag} file is not mounted"
    assert int(flags["model_config_file_poll_wait_seconds"]) > 0
    assert flags["enable_batching"] == "true"
    assert flags["enable_model_warmup"] == "true"
    assert flags["allow_version_labels_for_unavailable_models"] == "true"


def test_compose_healthcheck_and_restart(service: dict):
    command = " ".join(service["healthcheck"]["test"])
    assert "/v1/models/mnist" in command
    # The stock image has no curl or wget: the check must not depend on them.
    assert "curl" not in command and "wget" not in command
    assert service["restart"] in {"always", "unless-stopped", "on-failure"}
