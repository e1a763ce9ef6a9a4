"""REST transport: TF Serving's /v1/models API over a keep-alive HTTP session, orjson bodies."""

from __future__ import annotations

import base64
import re
import threading
import time
from urllib.parse import quote

import numpy as np
import orjson
import requests
from requests.adapters import HTTPAdapter

from client.errors import ClientError
from client.transport.base import RetryPolicy, Transport
from client.types import (
    ModelMetadata,
    ModelSpec,
    PredictResult,
    SignatureInfo,
    TensorInfo,
    VersionStatus,
)

# TF Serving's REST server maps its status codes onto HTTP (http_server.cc); this is the reverse.
# 502 and 504 also come from proxies in front of it.
HTTP_STATUS_CODES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    412: "FAILED_PRECONDITION",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

_JSON_DTYPES = {
    "DT_FLOAT": "float32",
    "DT_DOUBLE": "float64",
    "DT_HALF": "float16",
    "DT_INT8": "int8",
    "DT_INT16": "int16",
    "DT_INT32": "int32",
    "DT_INT64": "int64",
    "DT_UINT8": "uint8",
    "DT_UINT16": "uint16",
    "DT_UINT32": "uint32",
    "DT_UINT64": "uint64",
    "DT_BOOL": "bool",
    "DT_STRING": "object",
}


def status_code_name(http_status: int) -> str:
    """The gRPC code name for an HTTP status from TF Serving (UNKNOWN for anything else)."""
    if http_status in HTTP_STATUS_CODES:
        return HTTP_STATUS_CODES[http_status]
    return "INTERNAL" if http_status >= 500 else "UNKNOWN"


def _json_value(array: np.ndarray):
    """What orjson can write for one input: numeric arrays natively, strings as {"b64": ...}."""
    if array.dtype.kind in "OSU":
        encoded = [
            {"b64": base64.b64encode(v.encode() if isinstance(v, str) else bytes(v)).decode()}
            for v in array.reshape(-1)
        ]
        holder = np.empty(len(encoded), dtype=object)
        holder[:] = encoded
        return holder.reshape(array.shape).tolist()
    if array.dtype == np.float16:
        return array.astype(np.float32)
    return np.ascontiguousarray(array)


# "  0" .. "255": every byte value as JSON text, right-aligned in three characters.
_DIGITS = np.frombuffer(
    b"".join(f"{value:>3}".encode() for value in range(256)), dtype=np.uint8
).reshape(256, 3)


def _uint8_json(array: np.ndarray) -> bytes:
    """A uint8 array as JSON nested lists, written by numpy: every number in the same width
    (padded with the spaces JSON allows), so each nesting level is one fixed-size frame around
    the level below, filled by slice assignments.

    The bytes parse to `array.tolist()` (TF Serving's parser and ours skip the spaces). orjson
    writes a [256, 28, 28, 1] batch in about 2.5 times the time, nesting every pixel as a
    one-element list through its generic path; the text is 8 % longer.
    """
    text = _DIGITS[array]
    while text.ndim > 1:
        *outer, count, width = text.shape
        framed = np.empty((*outer, 1 + count * (width + 1)), dtype=np.uint8)
        # Splitting the contiguous last axis is a view: the writes below land in `framed`.
        cells = framed[..., 1:].reshape(*outer, count, width + 1)
        framed[..., 0] = ord("[")
        cells[..., :width] = text
        cells[..., :-1, width] = ord(",")
        cells[..., -1, width] = ord("]")
        text = framed
    return text.tobytes()


def _decode_strings(values) -> np.ndarray:
    if isinstance(values, list) and all(type(value) is str for value in values):
        array = np.empty(len(values), dtype=object)  # the common case: one plain string per row
        array[:] = [value.encode() for value in values]
        return array
    array = np.asarray(values, dtype=object)
    flat = array.reshape(-1)
    for index, value in enumerate(flat):
        if isinstance(value, dict) and "b64" in value:
            flat[index] = base64.b64decode(value["b64"])
        elif isinstance(value, str):
            flat[index] = value.encode()
    return array


def _tensor_info(key: str, info: dict) -> TensorInfo:
    shape_info = info.get("tensor_shape", {})
    shape = None
    if not shape_info.get("unknown_rank", False):
        shape = tuple(int(dim.get("size", -1)) for dim in shape_info.get("dim", []))
    dtype = info.get("dtype", "DT_INVALID")
    return TensorInfo(
        name=key, dtype=_JSON_DTYPES.get(dtype, dtype.removeprefix("DT_").lower()), shape=shape
    )


class RestTransport(Transport):
    """Talks to `base_url` ("http://host:8501") with one pooled keep-alive session."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        max_connections: int = 8,
        server: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.server = server or self.base_url
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self._session = requests.Session()
        # The environment (proxies, CA bundle, ~/.netrc) is read once here: with trust_env,
        # requests looks for ~/.netrc on every request, a file-system search per batch.
        settings = self._session.merge_environment_settings(self.base_url, {}, None, None, None)
        self._session.proxies.update(settings["proxies"])
        self._session.verify = settings["verify"]
        self._session.cert = settings["cert"]
        self._session.auth = requests.utils.get_netrc_auth(self.base_url)
        self._session.trust_env = False
        # Retries are ours (with jitter); urllib3's would double them.
        adapter = HTTPAdapter(
            pool_connections=1, pool_maxsize=max(1, max_connections), max_retries=0
        )
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._session.headers["Content-Type"] = "application/json"
        # Output dtypes per model, from its metadata: JSON numbers carry no width, and the gRPC
        # transport returns float32 probabilities, so the REST one must too.
        self._output_types: dict[ModelSpec, tuple[int, dict[str, str]]] = {}
        self._types_lock = threading.Lock()

    def _model_path(self, model: ModelSpec) -> str:
        path = f"{self.base_url}/v1/models/{quote(model.name, safe='')}"
        if model.version is not None:
            path += f"/versions/{model.version}"
        elif model.label is not None:
            path += f"/labels/{quote(model.label, safe='')}"
        return path

    def _request(
        self,
        method: str,
        url: str,
        body: bytes | None,
        timeout: float | None,
        retry: RetryPolicy | None = None,
    ) -> dict:
        timeout = self.timeout if timeout is None else timeout

        def attempt() -> dict:
            try:
                reply = self._session.request(method, url, data=body, timeout=timeout)
            except requests.exceptions.ConnectionError as error:
                # ConnectTimeout is a ConnectionError too: the server was not reached either way.
                raise ClientError(
                    f"cannot reach {self.server}: {_reason(error)}", "UNAVAILABLE"
                ) from None
            except requests.exceptions.ChunkedEncodingError as error:
                # The reply stopped short of its length: the server went away while answering.
                raise ClientError(
                    f"connection to {self.server} broke during the reply: {_reason(error)}",
                    "UNAVAILABLE",
                ) from None
            except requests.exceptions.Timeout:
                raise ClientError(
                    f"no reply from {self.server} within {timeout:g} s", "DEADLINE_EXCEEDED"
                ) from None
            except requests.exceptions.RequestException as error:
                raise ClientError(f"request to {url} failed: {_reason(error)}", "UNKNOWN") from None
            try:
                payload = orjson.loads(reply.content) if reply.content else {}
            except orjson.JSONDecodeError:
                payload = None
            if reply.status_code != 200:
                message = payload.get("error") if isinstance(payload, dict) else None
                if not message:
                    text = reply.text.strip().splitlines()
                    message = f"HTTP {reply.status_code} {reply.reason}" + (
                        f": {text[0][:200]}" if text else ""
                    )
                raise ClientError(str(message), status_code_name(reply.status_code))
            if not isinstance(payload, dict):
                raise ClientError(f"{url} did not answer with a JSON object", "INTERNAL")
            return payload

        return (retry or self.retry).call(attempt)

    def predict(
        self,
        model: ModelSpec,
        inputs: dict[str, np.ndarray],
        *,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
    ) -> PredictResult:
        version, output_types = self._model_output_types(model)
        arrays = {name: np.asarray(array) for name, array in inputs.items()}
        if len({array.shape[0] if array.ndim else None for array in arrays.values()}) != 1:
            raise ClientError(
                "all inputs must have the same batch size (first dimension)", "INVALID_ARGUMENT"
            )
        # The columnar form: one nested list per input, and one per output in the reply, where
        # the row form would have the server split the outputs into rows and us join them.
        (only,) = arrays.values() if len(arrays) == 1 else (None,)
        if only is not None and only.dtype == np.uint8 and only.ndim and only.size:
            head = orjson.dumps({"signature_name": model.signature})[:-1]
            body = b"".join((head, b',"inputs":', _uint8_json(only), b"}"))
        else:
            values = {name: _json_value(array) for name, array in arrays.items()}
            body = orjson.dumps(
                {
                    "signature_name": model.signature,
                    "inputs": next(iter(values.values())) if len(values) == 1 else values,
                },
                option=orjson.OPT_SERIALIZE_NUMPY,
            )
        started = time.perf_counter()
        payload = self._request("POST", self._model_path(model) + ":predict", body, timeout, retry)
        latency_ms = (time.perf_counter() - started) * 1000
        outputs = self._outputs(payload, output_types)
        return PredictResult(
            outputs=outputs,
            model_name=model.name,
            # TF Serving's REST predict reply does not say which version answered: report the
            # one asked for, else the one the metadata call found.
            model_version=int(model.version or version),
            latency_ms=latency_ms,
        )

    @staticmethod
    def _outputs(payload: dict, output_types: dict[str, str]) -> dict[str, np.ndarray]:
        """The reply's tensors by output name: `outputs` (columnar, what a columnar request
        gets), or `predictions` (rows) from a server that answers rows anyway."""
        if "outputs" in payload:
            columns = payload["outputs"]
            if not isinstance(columns, dict) or (len(output_types) == 1 and _is_b64(columns)):
                if len(output_types) != 1:
                    raise ClientError(
                        "cannot match the predict reply to the signature's outputs", "INTERNAL"
                    )
                columns = {next(iter(output_types)): columns}
        elif "predictions" in payload:
            columns = _rows_to_columns(payload["predictions"], output_types)
        else:
            raise ClientError(
                "the predict reply has neither 'outputs' nor 'predictions'", "INTERNAL"
            )
        outputs = {}
        for name, values in columns.items():
            dtype = output_types.get(name)
            if dtype == "object" or (dtype is None and _looks_like_strings(values)):
                outputs[name] = _decode_strings(values)
            else:
                try:
                    outputs[name] = np.asarray(values, dtype=dtype)
                except (TypeError, ValueError) as error:
                    raise ClientError(
                        f"output {name!r} is not a {dtype} tensor: {error}", "INTERNAL"
                    ) from None
        return outputs

    def _model_output_types(self, model: ModelSpec) -> tuple[int, dict[str, str]]:
        with self._types_lock:
            cached = self._output_types.get(model)
        if cached is not None:
            return cached
        metadata = self.metadata(model)
        signature = metadata.signatures.get(model.signature)
        if signature is None:
            raise ClientError(
                f"model {model.name!r} has no signature {model.signature!r} "
                f"(it has: {', '.join(sorted(metadata.signatures)) or 'none'})",
                "INVALID_ARGUMENT",
            )
        cached = (metadata.version, {key: info.dtype for key, info in signature.outputs.items()})
        with self._types_lock:
            self._output_types[model] = cached
        return cached

    def status(self, model: ModelSpec) -> list[VersionStatus]:
        payload = self._request("GET", self._model_path(model), None, None)
        return [
            VersionStatus(
                version=int(item["version"]),
                state=item.get("state", "UNKNOWN"),
                error_code=item.get("status", {}).get("error_code", "OK"),
                error_message=item.get("status", {}).get("error_message", ""),
            )
            for item in payload.get("model_version_status", [])
        ]

    def metadata(self, model: ModelSpec) -> ModelMetadata:
        payload = self._request("GET", self._model_path(model) + "/metadata", None, None)
        try:
            spec = payload["model_spec"]
            signature_map = payload["metadata"]["signature_def"]["signature_def"]
        except (KeyError, TypeError):
            raise ClientError("the metadata reply has no signature_def", "INTERNAL") from None
        signatures = {
            name: SignatureInfo(
                name=name,
                inputs={k: _tensor_info(k, v) for k, v in sorted(sig.get("inputs", {}).items())},
                outputs={k: _tensor_info(k, v) for k, v in sorted(sig.get("outputs", {}).items())},
                method_name=sig.get("method_name", ""),
            )
            for name, sig in sorted(signature_map.items())
        }
        metadata = ModelMetadata(
            name=spec.get("name", model.name),
            version=int(spec.get("version") or 0),
            signatures=signatures,
        )
        if model.signature in signatures:  # predict needs them: no second metadata call
            outputs = signatures[model.signature].outputs
            with self._types_lock:
                self._output_types[model] = (
                    metadata.version,
                    {key: info.dtype for key, info in outputs.items()},
                )
        return metadata

    def close(self) -> None:
        self._session.close()


def _is_b64(value) -> bool:
    return isinstance(value, dict) and set(value) == {"b64"}


def _rows_to_columns(predictions, output_types: dict[str, str]) -> dict[str, list]:
    """Row-format predictions -> one list per output: TF Serving writes one value per row for
    a single-output signature, else one object per row keyed by output name."""
    if not isinstance(predictions, list):
        raise ClientError("the predict reply's 'predictions' is not a list", "INTERNAL")
    if len(output_types) == 1:
        return {next(iter(output_types)): predictions}
    if not all(isinstance(row, dict) for row in predictions):
        raise ClientError("cannot match the predict reply to the signature's outputs", "INTERNAL")
    names = predictions[0].keys() if predictions else output_types.keys()
    try:
        return {name: [row[name] for row in predictions] for name in names}
    except KeyError as error:
        raise ClientError(f"a prediction lacks output {error}", "INTERNAL") from None


def _looks_like_strings(values) -> bool:
    while isinstance(values, list) and values:
        values = values[0]
    return isinstance(values, str | dict)


def _reason(error: Exception) -> str:
    """The useful part of a requests error: "[Errno 111] Connection refused", not a repr chain."""
    text = str(error)
    found = re.search(r"\[Errno -?\d+\] [^'\")]+", text)
    return found.group(0).strip() if found else text
