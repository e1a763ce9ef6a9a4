"""The client's own .proto declarations against TensorFlow's and TF Serving's: every message,
field, enum value and method the client declares exists there with the same full name, number,
type and cardinality, so the wire format and the gRPC method paths are TF Serving's."""

from __future__ import annotations

import pytest

from client.transport import protos

pytestmark = pytest.mark.slow  # imports TensorFlow's generated modules (its package __init__)


@pytest.fixture(scope="module")
def theirs():
    """TF Serving's and TensorFlow's generated modules (the dev venv has them), by our name."""
    pytest.importorskip("tensorflow_serving")
    from tensorflow.core.framework import tensor_pb2, types_pb2
    from tensorflow.core.protobuf import meta_graph_pb2
    from tensorflow_serving.apis import (
        get_model_metadata_pb2,
        get_model_status_pb2,
        model_service_pb2,
        predict_pb2,
        prediction_service_pb2,
    )

    return {
        "tensorflow": [tensor_pb2, types_pb2, meta_graph_pb2],
        "serving": [
            predict_pb2,
            get_model_metadata_pb2,
            get_model_status_pb2,
            prediction_service_pb2,
            model_service_pb2,
        ],
    }


def _their_pool(theirs):
    return theirs["tensorflow"][0].DESCRIPTOR.pool


def _messages(file_descriptor):
    def walk(message):
        yield message
        for nested in message.nested_types:
            yield from walk(nested)

    for message in file_descriptor.message_types_by_name.values():
        yield from walk(message)


def _enums(file_descriptor):
    yield from file_descriptor.enum_types_by_name.values()
    for message in _messages(file_descriptor):
        yield from message.enum_types


def _kind(field) -> tuple:
    target = field.message_type or field.enum_type
    return (field.name, field.type, field.is_repeated, target.full_name if target else None)


@pytest.mark.parametrize("module", ["tensorflow", "tensorflow_error", "serving"])
def test_every_declared_field_is_tf_servings(theirs, module):
    pool = _their_pool(theirs)
    ours = getattr(protos.load(), module).DESCRIPTOR
    checked = 0
    for message in _messages(ours):
        reference = pool.FindMessageTypeByName(message.full_name)
        for field in message.fields:
            assert field.number in reference.fields_by_number, (message.full_name, field.name)
            their_field = reference.fields_by_number[field.number]
            assert _kind(field) == _kind(their_field), (message.full_name, field.name)
            oneof = field.containing_oneof
            their_oneof = their_field.containing_oneof
            assert (oneof and oneof.name) == (their_oneof and their_oneof.name), field.full_name
            checked += 1
    for enum in _enums(ours):
        reference = pool.FindEnumTypeByName(enum.full_name)
        for value in enum.values:
            assert reference.values_by_name[value.name].number == value.number, value.name
            checked += 1
    assert checked > 0


def test_services_have_tf_servings_method_paths(theirs):
    pool = _their_pool(theirs)
    ours = protos.load().serving.DESCRIPTOR
    assert set(ours.services_by_name) == {"PredictionService", "ModelService"}
    for service in ours.services_by_name.values():
        reference = pool.FindServiceByName(service.full_name)
        for method in service.methods:
            their_method = reference.methods_by_name[method.name]
            assert method.input_type.full_name == their_method.input_type.full_name
            assert method.output_type.full_name == their_method.output_type.full_name
    stub_source = protos.load().serving_grpc.__file__
    with open(stub_source, encoding="utf-8") as handle:
        text = handle.read()
    for path in (
        "/tensorflow.serving.PredictionService/Predict",
        "/tensorflow.serving.PredictionService/GetModelMetadata",
        "/tensorflow.serving.ModelService/GetModelStatus",
    ):
        assert f"'{path}'" in text, path


def test_the_client_keeps_to_its_own_descriptor_pool(theirs):
    from google.protobuf import descriptor_pool

    ours = protos.load()
    default = descriptor_pool.Default()
    for module in (ours.tensorflow, ours.tensorflow_error, ours.serving):
        with pytest.raises(KeyError):
            default.FindFileByName(module.DESCRIPTOR.name)
    assert default.FindMessageTypeByName("tensorflow.TensorProto").file.name == (
        "tensorflow/core/framework/tensor.proto"
    )
