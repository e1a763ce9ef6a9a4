"""The server's command line: one table of flags, the options built from it, and its checks.

Names and defaults follow TF Serving 2.21's `main.cc` and `server.h`. Flags are `--name=value`
(as TF Serving documents them) or `--name value`; booleans also take the bare form
`--enable_batching`. A flag TF Serving has but this server does not implement is refused with a
one-line message rather than silently ignored, so a command line that works here means the same
thing on the stock image. Nothing here imports TensorFlow or grpc: `--help` stays instant.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

CPUS = os.cpu_count() or 1


@dataclass(frozen=True)
class Flag:
    kind: type
    default: object
    help: str
    local_only: bool = False  # a flag of this server's that tensorflow_model_server lacks


FLAGS: dict[str, Flag] = {
    "port": Flag(int, 8500, "gRPC port (PredictionService, ModelService, ProfilerService)."),
    "grpc_socket_path": Flag(
        str, "", "Also serve gRPC on this Unix domain socket (relative or absolute path)."
    ),
    "grpc_channel_arguments": Flag(
        str, "", "Comma-separated key=value gRPC server arguments (integers passed as ints)."
    ),
    "grpc_max_threads": Flag(int, 4 * CPUS, "Threads that run gRPC calls (default 4 x CPUs)."),
    "rest_api_port": Flag(int, 0, "HTTP/REST port; 0 disables REST, as in TF Serving."),
    "rest_api_num_threads": Flag(
        int, 4 * CPUS, "Threads that run REST requests (default 4 x CPUs)."
    ),
    "rest_api_timeout_in_ms": Flag(
        int, 30000, "REST request deadline; late requests get 504 DEADLINE_EXCEEDED."
    ),
    "host": Flag(
        str,
        "127.0.0.1",
        "Address the gRPC and REST ports listen on. Loopback by default (TF Serving listens "
        "on every interface); 0.0.0.0 or :: to accept other machines.",
        local_only=True,
    ),
    "max_request_bytes": Flag(
        int,
        256 * 1024 * 1024,
        "Largest decoded size of one gRPC request's tensors; larger ones get "
        "RESOURCE_EXHAUSTED before anything is allocated. 0: no limit.",
        local_only=True,
    ),
    "max_request_elements": Flag(
        int,
        16 * 1024 * 1024,
        "Most tensor elements one REST request may decode (counted before decoding); "
        "more get 400. 0: no limit.",
        local_only=True,
    ),
    "model_name": Flag(str, "default", "Model name (ignored with --model_config_file)."),
    "model_base_path": Flag(
        str, "", "Folder holding integer version sub-folders (ignored with --model_config_file)."
    ),
    "model_config_file": Flag(
        str, "", "Text-format ModelServerConfig: several models, version policies, labels."
    ),
    "model_config_file_poll_wait_seconds": Flag(
        int, 0, "Re-read --model_config_file this often; 0 reads it once at start-up."
    ),
    "file_system_poll_wait_seconds": Flag(
        int, 1, "Look for new or removed versions this often; 0 looks once at start-up."
    ),
    "monitoring_config_file": Flag(
        str, "", "Text-format MonitoringConfig; prometheus_config enables /monitoring/... ."
    ),
    "enable_batching": Flag(bool, False, "Merge concurrent predict requests into batches."),
    "batching_parameters_file": Flag(
        str, "", "Text-format BatchingParameters (max_batch_size, batch_timeout_micros, ...)."
    ),
    "enable_model_warmup": Flag(
        bool, True, "Replay assets.extra/tf_serving_warmup_requests before AVAILABLE."
    ),
    "allow_version_labels_for_unavailable_models": Flag(
        bool, False, "Let a new version label point at a version that is not loaded yet."
    ),
    "allow_config_reload": Flag(
        bool,
        True,
        "Accept ModelService/HandleReloadConfigRequest. false: it answers PERMISSION_DENIED "
        "(the config file still applies).",
        local_only=True,
    ),
    "model_roots": Flag(
        str,
        "",
        "Comma-separated folders a HandleReloadConfigRequest may take base paths from "
        "(default: the folders holding the start-up models' base paths).",
        local_only=True,
    ),
    "show_paths": Flag(
        bool,
        False,
        "Name version folders by absolute path in status answers and metrics, as TF Serving "
        "does (default: <model>/<folder>).",
        local_only=True,
    ),
    "prefer_tflite_model": Flag(
        bool, False, "Serve model.tflite from a version folder when it has one (TF Lite)."
    ),
    "enable_profiler": Flag(
        bool, True, "Answer tensorflow.ProfilerService/Profile on the gRPC port (TF profiler)."
    ),
    "verbose": Flag(
        bool,
        False,
        "Log TensorFlow's start-up lines (oneDNN, CUDA probing), hidden by default, and its "
        "INFO logs (unless TF_CPP_MIN_LOG_LEVEL is set).",
        local_only=True,
    ),
}

# Flags of tensorflow_model_server 2.21 that this server does not implement.
UNSUPPORTED = {
    "enable_per_model_batching_parameters", "rest_api_enable_cors_support",
    "per_process_gpu_memory_fraction", "saved_model_tags", "tensorflow_session_parallelism",
    "tensorflow_intra_op_parallelism", "tensorflow_inter_op_parallelism",
    "platform_config_file", "ssl_config_file", "use_alts_credentials",
    "tensorflow_session_config_file", "num_load_threads", "num_unload_threads",
    "max_num_load_retries", "load_retry_interval_micros", "flush_filesystem_caches",
    "num_request_iterations_for_warmup", "enforce_session_run_timeout",
    "remove_unused_fields_from_bundle_metagraph", "num_tflite_pools",
    "num_tflite_interpreters_per_pool", "thread_pool_factory_config_file",
    "enable_signature_method_name_check", "xla_cpu_compilation_enabled",
    "xla_gpu_compilation_enabled", "mixed_precision", "skip_initialize_tpu",
    "use_tflite_model", "version", "enable_grpc_healthcheck_service",
    "enable_serialization_as_tensor_content",
}  # fmt: skip

# One attribute per flag, with the flag's default; `given` names the flags on the command line.
Options = dataclasses.make_dataclass(
    "Options",
    [(name, flag.kind, dataclasses.field(default=flag.default)) for name, flag in FLAGS.items()]
    + [("given", set, dataclasses.field(default_factory=set))],
)


class FlagError(ValueError):
    """A bad command line; the message is one line meant for the user."""


_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


def _convert(name: str, kind: type, raw: str) -> object:
    if kind is bool:
        lowered = raw.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise FlagError(f"--{name} takes true or false, got {raw!r}")
    if kind is int:
        try:
            return int(raw)
        except ValueError:
            raise FlagError(f"--{name} takes an integer, got {raw!r}") from None
    return raw


def parse_flags(argv: list[str]) -> Options:
    """Turn `argv` (without the program name) into Options; raise FlagError on a bad flag."""
    options = Options()
    index = 0
    while index < len(argv):
        argument = argv[index]
        index += 1
        if not argument.startswith("-") or argument in ("-", "--"):
            raise FlagError(f"unexpected argument {argument!r} (flags look like --port=8500)")
        name, has_value, raw = argument.lstrip("-").partition("=")
        if name in UNSUPPORTED:
            raise FlagError(
                f"--{name} is a tensorflow_model_server flag this server does not support"
            )
        if name not in FLAGS:
            raise FlagError(f"unknown flag --{name} (see python -m serving --help)")
        flag = FLAGS[name]
        if not has_value:
            if flag.kind is bool and (
                index >= len(argv) or argv[index].lower() not in _TRUE + _FALSE
            ):
                raw = "true"
            elif index < len(argv):
                raw = argv[index]
                index += 1
            else:
                raise FlagError(f"--{name} needs a value")
        setattr(options, name, _convert(name, flag.kind, raw))
        options.given.add(name)
    validate(options)
    return options


def grpc_channel_arguments(text: str) -> list[tuple[str, int | str]]:
    """TF Serving's --grpc_channel_arguments: `key=value,...`; a value that parses as a 32-bit
    integer is passed as an int, any other as a string (server.cc parseGrpcChannelArgs)."""
    arguments: list[tuple[str, int | str]] = []
    for item in text.split(","):
        if not item:
            continue
        key, equals, value = item.partition("=")
        if not equals or not key:
            raise FlagError(
                f"--grpc_channel_arguments: {item!r} is not key=value "
                "(e.g. grpc.max_connection_age_ms=2000)"
            )
        try:
            number = int(value)
        except ValueError:
            arguments.append((key, value))
        else:
            arguments.append((key, number) if -(2**31) <= number < 2**31 else (key, value))
    return arguments


def validate(options: Options) -> None:
    for name in ("port", "rest_api_port"):
        value = getattr(options, name)
        if not 0 <= value <= 65535:
            raise FlagError(f"--{name} must be between 0 and 65535, got {value}")
    if options.port == 0 and not options.grpc_socket_path:
        raise FlagError("--port must be a port number, not 0 (or give --grpc_socket_path)")
    for name in ("max_request_bytes", "max_request_elements"):
        if getattr(options, name) < 0:
            raise FlagError(f"--{name} must be 0 (no limit) or a positive number")
    for name in ("rest_api_num_threads", "grpc_max_threads"):
        if getattr(options, name) < 1:
            raise FlagError(f"--{name} must be at least 1")
    if options.rest_api_port and options.rest_api_port == options.port:
        raise FlagError("--rest_api_port cannot be the same as --port")
    if not options.model_config_file and not options.model_base_path:
        raise FlagError("give --model_base_path (with --model_name) or --model_config_file")
    for name in ("model_config_file", "monitoring_config_file", "batching_parameters_file"):
        path = getattr(options, name)
        if path and not os.path.isfile(path):
            raise FlagError(f"--{name}: no such file: {path}")
    if options.batching_parameters_file and not options.enable_batching:
        raise FlagError("--batching_parameters_file needs --enable_batching")
    if not options.host:
        raise FlagError("--host needs an address, e.g. 127.0.0.1 or 0.0.0.0")
    grpc_channel_arguments(options.grpc_channel_arguments)


def usage() -> str:
    lines = [
        "usage: python -m serving --model_base_path=DIR [--model_name=NAME] [flags]",
        "       python -m serving --model_config_file=FILE [flags]",
        "",
        "A local server with TensorFlow Serving's REST and gRPC APIs and flags.",
        "",
        "flags:",
    ]
    for name, flag in FLAGS.items():
        kind = {int: "int", str: "string", bool: "bool"}[flag.kind]
        note = "  [local server only]" if flag.local_only else ""
        lines.append(f"  --{name}={kind}  (default {flag.default!r}){note}")
        lines.append(f"      {flag.help}")
    return "\n".join(lines)
