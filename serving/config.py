"""Reading TF Serving's text-format configuration files into plain values.

- `--model_config_file`: a `ModelServerConfig` with a `model_config_list` (name, base_path,
  model_platform "tensorflow", model_version_policy, version_labels).
- `--monitoring_config_file`: a `MonitoringConfig` (`prometheus_config { enable, path }`).
- `--batching_parameters_file`: `BatchingParameters` (max_batch_size, batch_timeout_micros,
  max_enqueued_batches, num_batch_threads, allowed_batch_sizes, ...).

The protobuf modules come from tensorflow-serving-api and do not import TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"


class ConfigError(ValueError):
    """A configuration file that TF Serving would refuse; one line for the user."""


@dataclass(frozen=True)
class VersionPolicy:
    """Which integer versions found on disk should be served."""

    kind: str = "latest"  # "latest", "all" or "specific"
    num_versions: int = 1  # for "latest"
    versions: frozenset[int] = frozenset()  # for "specific"

    def select(self, available: list[int]) -> set[int]:
        """The versions to serve among `available` (version folders found on disk)."""
        if self.kind == "all":
            return set(available)
        if self.kind == "specific":
            return {version for version in available if version in self.versions}
        return set(sorted(available, reverse=True)[: self.num_versions])

    def describe(self) -> str:
        if self.kind == "latest":
            return f"latest {self.num_versions}"
        if self.kind == "specific":
            return "specific " + ",".join(str(v) for v in sorted(self.versions))
        return "all"


@dataclass(frozen=True)
class ModelConfig:
    name: str
    base_path: str
    policy: VersionPolicy = VersionPolicy()
    labels: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class BatchingConfig:
    """TF Serving's BatchingParameters, with TF Serving's defaults for unset fields."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 100
    num_batch_threads: int = 1
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False
    enable_large_batch_splitting: bool = False


def _parse_text(path: str | Path, message) -> object:
    from google.protobuf import text_format

    try:
        text = Path(path).read_text()
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror}") from None
    try:
        return text_format.Parse(text, message)
    except text_format.ParseError as error:
        # TF Serving's protobuf text parser logs "Error parsing text-format <type>: L:C: ..."
        # before the server gives up with "Invalid protobuf file"; scripts grep for either.
        where = str(error).replace(" : ", ": ", 1)
        raise ConfigError(
            f"Invalid protobuf file: '{path}': Error parsing text-format "
            f"{message.DESCRIPTOR.full_name}: {where}"
        ) from None


def model_configs_from_proto(config) -> list[ModelConfig]:
    """Plain ModelConfigs from a `ModelServerConfig` proto (file or HandleReloadConfigRequest)."""
    if config.WhichOneof("config") == "custom_model_config":
        raise ConfigError("custom_model_config is not supported; use model_config_list")
    models = []
    names = set()
    for entry in config.model_config_list.config:
        if not entry.name:
            raise ConfigError("a model in model_config_list has no name")
        if entry.name in names:
            raise ConfigError(f"Illegal to list model {entry.name} multiple times in config list")
        names.add(entry.name)
        if not entry.base_path:
            raise ConfigError(f"model {entry.name} has no base_path")
        if entry.model_platform and entry.model_platform != "tensorflow":
            raise ConfigError(
                f"model {entry.name}: model_platform {entry.model_platform!r} is not supported"
            )
        policy_proto = entry.model_version_policy
        which = policy_proto.WhichOneof("policy_choice")
        if which == "all":
            policy = VersionPolicy("all")
        elif which == "specific":
            versions = frozenset(policy_proto.specific.versions)
            if not versions:
                raise ConfigError(f"model {entry.name}: specific version policy lists no versions")
            policy = VersionPolicy("specific", versions=versions)
        else:
            number = policy_proto.latest.num_versions if which == "latest" else 1
            policy = VersionPolicy("latest", num_versions=max(number, 1))
        models.append(
            ModelConfig(
                name=entry.name,
                base_path=entry.base_path,
                policy=policy,
                labels=dict(entry.version_labels),
            )
        )
    return models


def read_model_config_file(path: str | Path) -> list[ModelConfig]:
    from tensorflow_serving.config import model_server_config_pb2

    config = _parse_text(path, model_server_config_pb2.ModelServerConfig())
    try:
        return model_configs_from_proto(config)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


def read_monitoring_config_file(path: str | Path) -> str | None:
    """The Prometheus path when the file enables it, else None."""
    from serving.protos import monitoring_config

    config = _parse_text(path, monitoring_config())
    if not config.prometheus_config.enable:
        return None
    return config.prometheus_config.path or DEFAULT_PROMETHEUS_PATH


def read_batching_parameters_file(path: str | Path | None, default_threads: int) -> BatchingConfig:
    if not path:
        return BatchingConfig(num_batch_threads=default_threads)
    from serving.protos import batching_parameters

    proto = _parse_text(path, batching_parameters())

    def value(name: str, default: int) -> int:
        return getattr(proto, name).value if proto.HasField(name) else default

    config = BatchingConfig(
        max_batch_size=value("max_batch_size", 1000),
        batch_timeout_micros=value("batch_timeout_micros", 0),
        max_enqueued_batches=value("max_enqueued_batches", 100),
        num_batch_threads=value("num_batch_threads", default_threads),
        allowed_batch_sizes=tuple(proto.allowed_batch_sizes),
        pad_variable_length_inputs=proto.pad_variable_length_inputs,
        enable_large_batch_splitting=proto.enable_large_batch_splitting.value,
    )
    if config.max_batch_size < 1:
        raise ConfigError(f"{path}: max_batch_size must be positive")
    if config.allowed_batch_sizes:
        sizes = list(config.allowed_batch_sizes)
        if sizes != sorted(sizes) or sizes[-1] != config.max_batch_size:
            raise ConfigError(
                f"{path}: allowed_batch_sizes must increase and end with max_batch_size"
            )
    return config
