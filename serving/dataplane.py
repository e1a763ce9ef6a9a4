"""The transport-agnostic core: predict, classify, regress, status, metadata, config reload.

Both adapters (`rest.py`, `grpc_service.py`) convert their wire format into the plain values
used here (numpy arrays, serialized tf.Examples, a RequestSpec) and back; every failure is a
ServingError carrying the canonical code and message TF Serving uses for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serving.batching import Batcher
from serving.errors import ServingError, internal, invalid_argument
from serving.manager import ModelManager
from serving.servable import DEFAULT_SIGNATURE, LoadedVersion, Signature, dtype_name

WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000


@dataclass(frozen=True)
class RequestSpec:
    """TF Serving's ModelSpec: a name, at most one of version / label, a signature name."""

    name: str
    version: int | None = None
    label: str | None = None
    signature_name: str = ""


@dataclass
class PredictResult:
    name: str
    version: int
    signature_name: str
    outputs: dict[str, np.ndarray]


@dataclass
class ClassifyResult:
    name: str
    version: int
    signature_name: str
    classifications: list[list[tuple[str, float]]]


@dataclass
class RegressResult:
    name: str
    version: int
    signature_name: str
    values: list[float]


def _keys(names) -> str:
    return ",".join(sorted(names))


def _signature_text(signature: Signature) -> str:
    from google.protobuf import text_format

    return text_format.MessageToString(signature.signature_def)


class DataPlane:
    def __init__(self, manager: ModelManager, batcher: Batcher | None = None) -> None:
        self.manager = manager
        self.batcher = batcher

    # ---- predict ------------------------------------------------------------------------

    def input_specs(self, spec: RequestSpec):
        """The signature's inputs, for decoding REST JSON (TF Serving's GetInfoMap)."""
        servable = self.manager.resolve(spec.name, spec.version, spec.label)
        key = spec.signature_name or DEFAULT_SIGNATURE
        signature = servable.signatures.get(key)
        if signature is None:
            raise invalid_argument(f'Serving signature name: "{key}" not found in signature def')
        return signature.inputs

    def predict(
        self,
        spec: RequestSpec,
        inputs: dict[str, np.ndarray],
        output_filter: list[str] | tuple[str, ...] = (),
    ) -> PredictResult:
        servable: LoadedVersion = self.manager.resolve(spec.name, spec.version, spec.label)
        signature = servable.signature(spec.signature_name)
        self._check_inputs(signature, inputs)
        wanted = list(output_filter)
        seen = set()
        for alias in wanted:
            if alias not in signature.outputs:
                raise invalid_argument(
                    f"output tensor alias not found in signature: {alias} Outputs expected to "
                    f"be in the set {{{_keys(signature.outputs)}}}."
                )
            if alias in seen:
                raise invalid_argument(f"duplicate output tensor alias: {alias}")
            seen.add(alias)
        outputs = self._run(servable, signature, inputs)
        if wanted:
            outputs = {alias: outputs[alias] for alias in wanted}
        return PredictResult(spec.name, servable.version, signature.name, outputs)

    def _check_inputs(self, signature: Signature, inputs: dict[str, np.ndarray]) -> None:
        expected, sent = set(signature.inputs), set(inputs)
        if len(sent) != len(expected):
            raise invalid_argument(
                f"input size does not match signature: {len(sent)}!={len(expected)} "
                f"len({{{_keys(sent)}}}) != len({{{_keys(expected)}}}). "
                f"Sent extra: {{{_keys(sent - expected)}}}. "
                f"Missing but required: {{{_keys(expected - sent)}}}."
            )
        for position, (key, array) in enumerate(sorted(inputs.items())):
            if key not in signature.inputs:
                raise invalid_argument(
                    f"input tensor alias not found in signature: {key}. Inputs expected to be "
                    f"in the set {{{_keys(expected)}}}."
                )
            tensor_spec = signature.inputs[key]
            if array.dtype != tensor_spec.dtype and not (
                tensor_spec.dtype == object and array.dtype.kind in "OSU"
            ):
                raise invalid_argument(
                    f"Expects arg[{position}] to be {dtype_name(tensor_spec.dtype_enum)} but "
                    f"{_numpy_dtype_name(array.dtype)} is provided"
                )
            if not tensor_spec.accepts_shape(array.shape):
                raise invalid_argument(
                    f"Input {key} has shape [{','.join(str(d) for d in array.shape)}], "
                    f"which does not match the signature's shape {tensor_spec.describe_shape()}"
                )

    def _run(self, servable: LoadedVersion, signature: Signature, inputs) -> dict:
        batchable = self.batcher is not None and all(
            spec.shape and spec.shape[0] is None for spec in signature.inputs.values()
        )
        if batchable:
            key = (servable.name, servable.version, signature.name)
            return self.batcher.submit(key, signature.run, inputs)
        return signature.run(inputs)

    # ---- classify / regress ---------------------------------------------------------------

    def _example_signature(self, spec: RequestSpec, regress: bool):
        servable: LoadedVersion = self.manager.resolve(spec.name, spec.version, spec.label)
        key = spec.signature_name or DEFAULT_SIGNATURE
        signature = servable.signatures.get(key)
        if signature is None:
            raise invalid_argument(f"No signature was found with the name: {key}")
        kind = "regression" if regress else "classification"
        if len(signature.inputs) != 1:
            raise invalid_argument("Expected one input Tensor.")
        if regress and len(signature.outputs) != 1:
            raise invalid_argument("Expected one output Tensor.")
        if not regress and len(signature.outputs) not in (1, 2):
            raise invalid_argument(
                f"Expected one or two output Tensors, found {len(signature.outputs)}"
            )
        if "inputs" not in signature.inputs:
            raise invalid_argument(
                f"No {kind} inputs found in SignatureDef: {_signature_text(signature)}"
            )
        if regress and "outputs" not in signature.outputs:
            raise invalid_argument(
                f"No regression outputs found in SignatureDef: {_signature_text(signature)}"
            )
        if not regress and not ({"classes", "scores"} & set(signature.outputs)):
            raise invalid_argument(
                'Expected classification signature outputs to contain at least one of "classes"'
                f' or "scores". Signature was: {_signature_text(signature)}'
            )
        return servable, signature

    def classify(self, spec: RequestSpec, examples: list[bytes]) -> ClassifyResult:
        servable, signature = self._example_signature(spec, regress=False)
        if not examples:
            raise invalid_argument("Input is empty.")
        outputs = signature.run({"inputs": np.array(examples, dtype=object)})
        classes, scores = outputs.get("classes"), outputs.get("scores")
        for name, tensor in (("classes", classes), ("scores", scores)):
            if tensor is not None and (tensor.ndim != 2 or tensor.shape[0] != len(examples)):
                raise invalid_argument(
                    f"Expected {name} Tensor shape: [batch_size num_classes] but got "
                    f"{list(tensor.shape)}"
                )
        width = (classes if classes is not None else scores).shape[1]
        result = []
        for row in range(len(examples)):
            entries = []
            for column in range(width):
                label = classes[row, column] if classes is not None else b""
                label = label.decode("utf-8", "replace") if isinstance(label, bytes) else label
                score = float(scores[row, column]) if scores is not None else 0.0
                entries.append((label, score))
            result.append(entries)
        return ClassifyResult(spec.name, servable.version, signature.name, result)

    def regress(self, spec: RequestSpec, examples: list[bytes]) -> RegressResult:
        servable, signature = self._example_signature(spec, regress=True)
        if not examples:
            raise invalid_argument("Input is empty.")
        values = signature.run({"inputs": np.array(examples, dtype=object)})["outputs"]
        if not (values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1)):
            raise invalid_argument(
                "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] "
                f"but got {list(values.shape)}"
            )
        if values.shape[0] != len(examples):
            raise invalid_argument(
                f"Input batch size did not match output batch size: {len(examples)} vs. "
                f"{values.shape[0]}"
            )
        return RegressResult(
            spec.name, servable.version, signature.name, [float(v) for v in values.reshape(-1)]
        )

    # ---- status, metadata, config ---------------------------------------------------------

    def status(self, spec: RequestSpec):
        # TF Serving's GetModelStatus looks at the name and version only (labels are ignored).
        return self.manager.version_states(spec.name, spec.version)

    def metadata(self, spec: RequestSpec) -> tuple[str, int, object]:
        servable: LoadedVersion = self.manager.resolve(spec.name, spec.version, spec.label)
        return spec.name, servable.version, servable.signature_defs

    def reload_config(self, models) -> None:
        self.manager.apply_config(models)

    # ---- warmup ---------------------------------------------------------------------------

    def warmup(self, servable: LoadedVersion) -> None:
        """Replay assets.extra/tf_serving_warmup_requests; any failure fails the load."""
        path = servable.path / WARMUP_FILE
        if not path.exists():
            return
        import tensorflow as tf
        from tensorflow_serving.apis import prediction_log_pb2

        count = 0
        try:
            for record in tf.data.TFRecordDataset(str(path)):
                if count >= MAX_WARMUP_RECORDS:
                    break
                log_entry = prediction_log_pb2.PredictionLog.FromString(record.numpy())
                self._replay(servable, log_entry)
                count += 1
        except ServingError as error:
            raise ServingError(
                error.code, f"Failed to warm up {path} (record {count}): {error.message}"
            ) from None
        except tf.errors.OpError as error:
            raise internal(f"Failed to read warmup file {path}: {error.message}") from None
        if count == 0:
            raise invalid_argument(f"No warmup data file found at {path}")

    def _replay(self, servable: LoadedVersion, log_entry) -> None:
        import tensorflow as tf

        kind = log_entry.WhichOneof("log_type")
        if kind == "predict_log":
            request = log_entry.predict_log.request
            signature = servable.signature(request.model_spec.signature_name)
            inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
            self._check_inputs(signature, inputs)
            signature.run(inputs)
        elif kind in ("classify_log", "regress_log"):
            request = getattr(log_entry, kind).request
            spec_name = request.model_spec.signature_name
            signature = servable.signature(spec_name)
            signature.run({"inputs": np.array(serialize_examples(request.input), dtype=object)})
        else:
            raise invalid_argument(f"Unsupported log_type for warmup: {kind}")


def serialize_examples(input_proto) -> list[bytes]:
    """tf.Examples of a tensorflow.serving.Input, serialized (context merged into each)."""
    which = input_proto.WhichOneof("kind")
    if which == "example_list":
        return [e.SerializeToString() for e in input_proto.example_list.examples]
    if which == "example_list_with_context":
        listed = input_proto.example_list_with_context
        serialized = []
        for example in listed.examples:
            merged = type(example)()
            merged.CopyFrom(listed.context)
            merged.MergeFrom(example)
            serialized.append(merged.SerializeToString())
        return serialized
    return []


def _numpy_dtype_name(dtype: np.dtype) -> str:
    names = {"float32": "float", "float64": "double"}
    return "string" if dtype.kind in "OSU" else names.get(dtype.name, dtype.name)
