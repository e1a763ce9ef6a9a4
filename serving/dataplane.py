"""The transport-agnostic core: predict, classify, regress, status, metadata, config reload.

Both adapters (`rest.py`, `grpc_service.py`) convert their wire format into the plain values
used here (numpy arrays, serialized tf.Examples, a RequestSpec) and back; every failure is a
ServingError carrying the canonical code and message TF Serving uses for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serving import tensorproto
from serving.batching import Batcher
from serving.errors import ServingError, internal, invalid_argument, unimplemented
from serving.manager import ModelManager
from serving.servable import (
    CLASSIFY_METHOD,
    DEFAULT_SIGNATURE,
    REGRESS_METHOD,
    LoadedVersion,
    Signature,
    dtype_name,
)

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

    def resolve_for_rest(self, spec: RequestSpec) -> tuple[LoadedVersion, Signature]:
        """The version and signature a REST predict decodes its JSON for and then runs
        (TF Serving's GetInfoMap wording when the signature is missing). Resolved once, so
        that a hot swap cannot decode against one version and run another."""
        servable = self.manager.resolve(spec.name, spec.version, spec.label)
        key = spec.signature_name or DEFAULT_SIGNATURE
        signature = servable.signatures.get(key)
        if signature is None:
            raise invalid_argument(f'Serving signature name: "{key}" not found in signature def')
        return servable, signature

    def predict(
        self,
        spec: RequestSpec,
        inputs: dict[str, np.ndarray],
        output_filter: list[str] | tuple[str, ...] = (),
        resolved: tuple[LoadedVersion, Signature] | None = None,
    ) -> PredictResult:
        if resolved is None:
            servable = self.manager.resolve(spec.name, spec.version, spec.label)
            signature = servable.signature(spec.signature_name)
        else:
            servable, signature = resolved
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
        outputs = self._run(servable, signature, inputs, wanted or None)
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
            # Shapes are not compared with the signature's: TF Serving hands the tensors to the
            # session as they are (predict_util.cc), and the graph's ops decide.

    def _run(self, servable: LoadedVersion, signature: Signature, inputs, wanted=None) -> dict:
        batchable = self.batcher is not None and all(
            spec.shape and spec.shape[0] is None for spec in signature.inputs.values()
        )
        if batchable:
            # Merged requests may filter different outputs: a batch fetches them all.
            key = (servable.name, servable.version, signature.name)
            outputs = self.batcher.submit(key, signature.run, inputs)
            return outputs if wanted is None else {alias: outputs[alias] for alias in wanted}
        return signature.run(inputs, wanted)

    # ---- classify / regress ---------------------------------------------------------------

    def _example_signature(self, servable: LoadedVersion, signature_name: str, regress: bool):
        """The signature a classify/regress call runs, checked as TF Serving's
        PreProcessClassification / PreProcessRegression check it."""
        key = signature_name or DEFAULT_SIGNATURE
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
        return signature

    def classify(self, spec: RequestSpec, examples: list[bytes]) -> ClassifyResult:
        servable: LoadedVersion = self.manager.resolve(spec.name, spec.version, spec.label)
        signature = self._example_signature(servable, spec.signature_name, regress=False)
        if not examples:
            raise invalid_argument("Input is empty.")
        outputs = signature.run({"inputs": np.array(examples, dtype=object)})
        result = _classifications(outputs, len(examples))
        return ClassifyResult(spec.name, servable.version, signature.name, result)

    def regress(self, spec: RequestSpec, examples: list[bytes]) -> RegressResult:
        servable: LoadedVersion = self.manager.resolve(spec.name, spec.version, spec.label)
        signature = self._example_signature(servable, spec.signature_name, regress=True)
        if not examples:
            raise invalid_argument("Input is empty.")
        outputs = signature.run({"inputs": np.array(examples, dtype=object)})
        values = _regressions(outputs, len(examples))
        return RegressResult(spec.name, servable.version, signature.name, values)

    def multi_inference(
        self, tasks: list[tuple[RequestSpec, str]], examples: list[bytes]
    ) -> list[ClassifyResult | RegressResult]:
        """Classify and regress tasks over one set of examples, in one run of the model.

        As TF Serving's TensorFlowMultiInferenceRunner: every task names the same model (the
        first task's spec picks the version), each signature at most once, each task is
        classify or regress; the examples are fed once to every task's input tensor and the
        union of their output tensors is fetched together.
        """
        first = tasks[0][0] if tasks else RequestSpec("")
        servable: LoadedVersion = self.manager.resolve(first.name, first.version, first.label)
        seen: set[str] = set()
        planned = []
        for spec, method in tasks:
            if not spec.name:
                raise invalid_argument("Found ModelSpec with an empty model name.")
            if spec.name != first.name:
                raise invalid_argument(
                    "All ModelSpecs in a MultiInferenceRequest must access the same model name."
                )
            key = spec.signature_name or DEFAULT_SIGNATURE
            if key in seen:
                raise invalid_argument(f"Duplicate evaluation of signature: {key}")
            seen.add(key)
            if key not in servable.signatures:
                raise invalid_argument(f"Requested signature not found in model graph: {key}")
            if method not in (CLASSIFY_METHOD, REGRESS_METHOD):
                raise unimplemented(f"Unsupported signature method_name: {method}")
            regress = method == REGRESS_METHOD
            planned.append((spec, regress, self._example_signature(servable, key, regress)))
        if not examples:
            raise invalid_argument("Input is empty.")
        batch = np.array(examples, dtype=object)
        feeds = sorted({s.signature_def.inputs["inputs"].name for _, _, s in planned})
        fetches = sorted(
            {info.name for _, _, s in planned for info in s.signature_def.outputs.values()}
        )
        values = dict(
            zip(fetches, servable.runtime.run([(n, batch) for n in feeds], fetches), strict=True)
        )
        results: list[ClassifyResult | RegressResult] = []
        for spec, regress, signature in planned:
            outputs = {a: values[i.name] for a, i in signature.signature_def.outputs.items()}
            kind, post = (
                (RegressResult, _regressions) if regress else (ClassifyResult, _classifications)
            )
            results.append(
                kind(spec.name, servable.version, spec.signature_name or DEFAULT_SIGNATURE,
                     post(outputs, len(examples)))
            )  # fmt: skip
        return results

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
        kind = log_entry.WhichOneof("log_type")
        if kind == "predict_log":
            request = log_entry.predict_log.request
            signature = servable.signature(request.model_spec.signature_name)
            unlimited = tensorproto.Budget(0)  # the model's own records
            inputs = {k: tensorproto.decode(k, v, unlimited) for k, v in request.inputs.items()}
            self._check_inputs(signature, inputs)
            signature.run(inputs)
        elif kind in ("classify_log", "regress_log"):
            request = getattr(log_entry, kind).request
            spec_name = request.model_spec.signature_name
            signature = servable.signature(spec_name)
            signature.run({"inputs": np.array(serialize_examples(request.input), dtype=object)})
        else:
            raise invalid_argument(f"Unsupported log_type for warmup: {kind}")


def _classifications(outputs: dict, count: int) -> list[list[tuple[str, float]]]:
    """Rows of (label, score) from a classify signature's outputs (PostProcessClassification)."""
    classes, scores = outputs.get("classes"), outputs.get("scores")
    for name, tensor in (("classes", classes), ("scores", scores)):
        if tensor is not None and (tensor.ndim != 2 or tensor.shape[0] != count):
            raise invalid_argument(
                f"Expected {name} Tensor shape: [batch_size num_classes] but got "
                f"{list(tensor.shape)}"
            )
    width = (classes if classes is not None else scores).shape[1]
    result = []
    for row in range(count):
        entries = []
        for column in range(width):
            label = classes[row, column] if classes is not None else b""
            label = label.decode("utf-8", "replace") if isinstance(label, bytes) else label
            score = float(scores[row, column]) if scores is not None else 0.0
            entries.append((label, score))
        result.append(entries)
    return result


def _regressions(outputs: dict, count: int) -> list[float]:
    """One value per example from a regress signature's output (PostProcessRegression)."""
    values = outputs["outputs"]
    if not (values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1)):
        raise invalid_argument(
            "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] "
            f"but got {list(values.shape)}"
        )
    if values.shape[0] != count:
        raise invalid_argument(
            f"Input batch size did not match output batch size: {count} vs. {values.shape[0]}"
        )
    return [float(v) for v in values.reshape(-1)]


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
