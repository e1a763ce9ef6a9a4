"""Message types TF Serving reads from text files that tensorflow-serving-api does not ship.

`monitoring_config.proto` and `session_bundle_config.proto` (BatchingParameters) are not in
the pip package, so their fields (names and types as in TF Serving 2.21) are declared here
and built at run time; `text_format` then parses the files exactly as TF Serving does.
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
    return {
        name: message_factory.GetMessageClass(
            pool.FindMessageTypeByName(f"tensorflow.serving.{name}")
        )
        for name in ("MonitoringConfig", "BatchingParameters")
    }


def monitoring_config():
    return _messages()["MonitoringConfig"]()


def batching_parameters():
    return _messages()["BatchingParameters"]()
