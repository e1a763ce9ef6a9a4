"""Message types the server needs that neither TensorFlow nor tensorflow-serving-api ships.

- `monitoring_config.proto` and `session_bundle_config.proto` (BatchingParameters): TF
  Serving's text config files; `text_format` then parses them exactly as TF Serving does.
- The profiler service's ProfileRequest / ProfileResponse / TerminateRequest (package
  `tensorflow`, tsl/profiler/protobuf/profiler_service.proto), which TF Serving serves on its
  gRPC port. Only the fields the server reads or writes are declared; a parser skips the rest
  (`opts`, `tools`, `tool_options`), as proto3 parsers do with unknown fields.

Field names, numbers and types are the wire protocol and follow those .proto files; they are
declared here and built at run time in a private descriptor pool.
"""

from __future__ import annotations

import functools


@functools.cache
def _messages() -> dict[str, type]:
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

    field = descriptor_pb2.FieldDescriptorProto
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    proto = descriptor_pb2.FileDescriptorProto(
        name="serving_local/configs.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )

    def message(name: str, fields: list[tuple[str, int, int, str]], repeated=()) -> None:
        entry = proto.message_type.add(name=name)
        for field_name, number, kind, type_name in fields:
            label = field.LABEL_REPEATED if field_name in repeated else field.LABEL_OPTIONAL
            added = entry.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                added.type_name = type_name

    int64_value = (field.TYPE_MESSAGE, ".google.protobuf.Int64Value")
    message(
        "PrometheusConfig",
        [("enable", 1, field.TYPE_BOOL, ""), ("path", 2, field.TYPE_STRING, "")],
    )
    message(
        "MonitoringConfig",
        [("prometheus_config", 1, field.TYPE_MESSAGE, ".tensorflow.serving.PrometheusConfig")],
    )
    message(
        "BatchingParameters",
        [
            ("max_batch_size", 1, *int64_value),
            ("batch_timeout_micros", 2, *int64_value),
            ("max_enqueued_batches", 3, *int64_value),
            ("num_batch_threads", 4, *int64_value),
            ("thread_pool_name", 5, field.TYPE_MESSAGE, ".google.protobuf.StringValue"),
            ("allowed_batch_sizes", 6, field.TYPE_INT64, ""),
            ("pad_variable_length_inputs", 7, field.TYPE_BOOL, ""),
            ("enable_large_batch_splitting", 8, field.TYPE_MESSAGE, ".google.protobuf.BoolValue"),
            ("max_execution_batch_size", 9, *int64_value),
        ],
        repeated=("allowed_batch_sizes",),
    )
    pool.Add(proto)

    proto = descriptor_pb2.FileDescriptorProto(
        name="serving_local/profiler.proto", package="tensorflow", syntax="proto3"
    )
    uint64 = (field.TYPE_UINT64, "")
    string = (field.TYPE_STRING, "")
    message(
        "ProfileRequest",
        [("duration_ms", 1, *uint64), ("max_events", 2, *uint64),
         ("repository_root", 5, *string), ("session_id", 6, *string),
         ("host_name", 7, *string)],
    )  # fmt: skip
    message("ProfileToolData", [("name", 1, *string), ("data", 2, field.TYPE_BYTES, "")])
    message(
        "ProfileResponse",
        [("tool_data", 6, field.TYPE_MESSAGE, ".tensorflow.ProfileToolData"),
         ("empty_trace", 7, field.TYPE_BOOL, "")],
        repeated=("tool_data",),
    )  # fmt: skip
    message("TerminateRequest", [("session_id", 1, *string)])
    message("TerminateResponse", [])
    pool.Add(proto)
    classes = {
        name: message_factory.GetMessageClass(
            pool.FindMessageTypeByName(f"tensorflow.serving.{name}")
        )
        for name in ("MonitoringConfig", "BatchingParameters")
    }
    for name in ("ProfileRequest", "ProfileResponse", "TerminateRequest", "TerminateResponse"):
        classes[name] = message_factory.GetMessageClass(
            pool.FindMessageTypeByName(f"tensorflow.{name}")
        )
    return classes


def monitoring_config():
    return _messages()["MonitoringConfig"]()


def batching_parameters():
    return _messages()["BatchingParameters"]()


def profiler_message(name: str):
    """ProfileRequest, ProfileResponse, TerminateRequest or TerminateResponse (the class)."""
    return _messages()[name]
