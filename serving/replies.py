"""Status and metadata replies, built once for both adapters.

gRPC returns these messages as they are; REST prints them as JSON the way TF Serving's
http_rest_api_handler does. Either way the content comes from here, so the two cannot drift.
"""

from __future__ import annotations

from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, model_pb2

# ModelVersionStatus.State (tensorflow_serving/apis/get_model_status.proto).
STATE_ENUM = {"START": 10, "LOADING": 20, "AVAILABLE": 30, "UNLOADING": 40, "END": 50}


def status_response(records) -> get_model_status_pb2.GetModelStatusResponse:
    """GetModelStatusResponse for the manager's version records (newest first)."""
    response = get_model_status_pb2.GetModelStatusResponse()
    for record in records:
        entry = response.model_version_status.add()
        entry.version = record.version
        entry.state = STATE_ENUM[record.state]
        entry.status.SetInParent()
        if record.error is not None:
            entry.status.error_code = int(record.error.code)
            entry.status.error_message = record.error.message
    return response


def model_spec(name: str, version: int, signature_name: str | None = None) -> model_pb2.ModelSpec:
    """The ModelSpec a reply names: model, version, and the signature when one was run."""
    spec = model_pb2.ModelSpec(name=name)
    spec.version.value = version
    if signature_name is not None:
        spec.signature_name = signature_name
    return spec


def signature_def_map(signature_defs) -> get_model_metadata_pb2.SignatureDefMap:
    """The version's whole SignatureDef map, as GetModelMetadata reports it."""
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for key, signature_def in signature_defs.items():
        signature_map.signature_def[key].CopyFrom(signature_def)
    return signature_map


def metadata_response(
    name: str, version: int, signature_defs
) -> get_model_metadata_pb2.GetModelMetadataResponse:
    """GetModelMetadataResponse with `signature_def` packed in an Any, as TF Serving sends it."""
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.CopyFrom(model_spec(name, version))
    response.metadata["signature_def"].Pack(signature_def_map(signature_defs))
    return response
