"""REST adapter: TF Serving's `/v1/models/...` API as a Starlette app (run by uvicorn).

Paths, methods and errors follow TF Serving's http_rest_api_handler: anything under `/v1/`
is matched case-insensitively against the predict (`POST ...:predict|classify|regress`) and
status/metadata (`GET`) patterns; a failure is `{"error": "<message>"}` with the HTTP status
TF Serving maps the canonical code to. Blocking work runs on `--rest_api_num_threads` threads
and is cut off after `--rest_api_timeout_in_ms`.
"""

from __future__ import annotations

import re
import time
import urllib.parse

import anyio
import orjson
from google.protobuf import json_format
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from serving import restjson
from serving.dataplane import DataPlane, RequestSpec
from serving.errors import Code, ServingError, invalid_argument, not_found
from serving.logs import log
from serving.metrics import Metrics
from serving.replies import model_spec, signature_def_map, status_response

PREDICT_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
    re.IGNORECASE,
)
STATUS_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE,
)
V1_PATH = re.compile(r"/v1/.*", re.IGNORECASE)
# TF Serving takes any body size; the local server caps it so that a runaway client cannot
# exhaust memory. 64 MiB holds ~85,000 MNIST images as JSON lists.
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
MAX_INT64 = 2**63 - 1
# Longer error messages (an op's, or one quoting a path or signature name) are cut to this.
MAX_ERROR_CHARS = 4096


class PayloadTooLarge(ServingError):
    """A body over the local limit: 413, which TF Serving (no limit) never answers."""

    def __init__(self, message: str) -> None:
        super().__init__(Code.RESOURCE_EXHAUSTED, message)

    @property
    def http_status(self) -> int:
        return 413


def json_response(body: bytes, status: int = 200) -> Response:
    return Response(body, status_code=status, media_type="application/json")


def error_response(error: ServingError) -> Response:
    message = str(error.message)
    if len(message) > MAX_ERROR_CHARS:
        message = f"{message[:MAX_ERROR_CHARS]}... (cut at {MAX_ERROR_CHARS} characters)"
    try:
        body = orjson.dumps({"error": message})
    except TypeError:  # a lone surrogate: UTF-8 cannot hold it, so write it as \udxxx text
        text = message.encode("utf-8", "backslashreplace").decode("utf-8")
        body = orjson.dumps({"error": text})
    return json_response(body, error.http_status)


class JsonErrorHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools (C parser) protocol, which `python -m serving` runs, whose own 400
    (a request the parser refuses: a bad Content-Length, control bytes in the path) is
    `{"error": ...}` like every other answer. TF Serving's libevent answers an HTML page
    there."""

    def send_400_response(self, msg: str) -> None:
        body = orjson.dumps({"error": msg})
        self.transport.write(
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode("ascii") + b"\r\n"
            b"connection: close\r\n\r\n" + body
        )
        self.transport.close()


class RestApi:
    def __init__(
        self,
        dataplane: DataPlane,
        metrics: Metrics,
        *,
        num_threads: int,
        timeout_ms: int,
        prometheus_path: str | None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_request_elements: int = restjson.DEFAULT_MAX_REQUEST_ELEMENTS,
    ) -> None:
        self.dataplane = dataplane
        self.metrics = metrics
        self.timeout = timeout_ms / 1000 if timeout_ms > 0 else None
        self.prometheus_path = prometheus_path
        self.max_body_bytes = max_body_bytes
        self.max_request_elements = max_request_elements
        self.num_threads = num_threads
        self._limiter: anyio.CapacityLimiter | None = None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":  # nothing to set up; acknowledge and return
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        try:
            response = await self.handle(request)
        except Exception as error:  # never uvicorn's plain-text 500
            log("request_failed", level="error", error=repr(error))
            response = error_response(
                ServingError(Code.UNKNOWN, f"{type(error).__name__}: {error}")
            )
        await response(scope, receive, send)

    async def handle(self, request: Request) -> Response:
        path = request.scope.get("raw_path", b"").decode("latin-1").split("?", 1)[0]
        path = path or request.url.path
        if self.prometheus_path and path == self.prometheus_path and request.method == "GET":
            return Response(self.metrics.render(), media_type="text/plain; version=0.0.4")
        if not V1_PATH.fullmatch(path):
            # TF Serving answers libevent's HTML "404 Not Found" page; JSON serves clients better.
            return error_response(not_found(f"Malformed request: {request.method} {path}"))
        try:
            return await self._dispatch(request, path)
        except ServingError as error:
            return error_response(error)
        except ClientDisconnect:  # nobody reads the answer
            return error_response(ServingError(Code.CANCELLED, "Client closed the request"))
        except Exception as error:  # a bug must still answer in TF Serving's error format
            log("request_failed", level="error", path=path, error=repr(error))
            return error_response(ServingError(Code.UNKNOWN, f"{type(error).__name__}: {error}"))

    async def _dispatch(self, request: Request, path: str) -> Response:
        method = request.method
        malformed = invalid_argument(f"Malformed request: {method} {path}")
        if method == "POST":
            match = PREDICT_PATH.fullmatch(path)
            if not match:
                raise malformed
            name, version, label, verb = match.groups()
            spec = _spec(name, version, label)
            body = await self._read_body(request)
            api = verb.capitalize()
            return await self._timed(spec, api, self._predict_like, spec, verb.lower(), body)
        if method == "GET":
            match = STATUS_PATH.fullmatch(path)
            if not match:
                raise malformed
            name, version, label, subresource = match.groups()
            if not name:
                raise invalid_argument("Missing model name in request.")
            spec = _spec(name, version, label)
            if subresource:
                return await self._timed(spec, "GetModelMetadata", self._metadata, spec)
            return await self._timed(spec, "GetModelStatus", self._status, spec)
        raise malformed

    async def _read_body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise PayloadTooLarge(self._too_large(int(declared)))
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body_bytes:
                raise PayloadTooLarge(self._too_large(size))
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(self, size: int) -> str:
        return (
            f"Request body of {size} bytes exceeds the local server's limit of "
            f"{self.max_body_bytes} bytes; send fewer instances per request"
        )

    async def _timed(self, spec: RequestSpec, api: str, function, *args) -> Response:
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.num_threads)
        started = time.perf_counter()
        status, version = "OK", None
        try:
            with anyio.fail_after(self.timeout):
                body, version = await anyio.to_thread.run_sync(
                    function, *args, limiter=self._limiter, abandon_on_cancel=True
                )
            return json_response(body)
        except TimeoutError:
            status = Code.DEADLINE_EXCEEDED.name
            return error_response(ServingError(Code.DEADLINE_EXCEEDED, "Deadline Exceeded"))
        except ServingError as error:
            status = error.code.name
            raise
        except Exception:
            status = Code.UNKNOWN.name
            raise
        finally:
            self.metrics.request(
                spec.name, version, api, "REST", status, time.perf_counter() - started
            )

    # ---- blocking handlers (run on worker threads) -------------------------------------------

    def _predict_like(self, spec: RequestSpec, verb: str, body: bytes) -> tuple[bytes, int]:
        parse = restjson.parse_predict_body if verb == "predict" else restjson.parse_body
        document = parse(body)
        spec = RequestSpec(spec.name, spec.version, spec.label, restjson.signature_name(document))
        if verb == "predict":
            resolved = self.dataplane.resolve_for_rest(spec)
            inputs, response_format = restjson.decode_predict(
                document, resolved[1].inputs, self.max_request_elements, body
            )
            started = time.perf_counter()
            result = self.dataplane.predict(spec, inputs, resolved=resolved)
            self.metrics.runtime(spec.name, "Predict", time.perf_counter() - started)
            return restjson.encode_predict(result.outputs, response_format), result.version
        examples = restjson.decode_examples(document)
        if verb == "classify":
            result = self.dataplane.classify(spec, examples)
            return restjson.encode_classify(result.classifications), result.version
        result = self.dataplane.regress(spec, examples)
        return restjson.encode_regress(result.values), result.version

    def _status(self, spec: RequestSpec) -> tuple[bytes, None]:
        response = status_response(self.dataplane.status(spec))
        text = json_format.MessageToJson(
            response, always_print_fields_with_no_presence=True, indent=1
        )
        return text.encode(), None

    def _metadata(self, spec: RequestSpec) -> tuple[bytes, int]:
        name, version, signature_defs = self.dataplane.metadata(spec)
        options = {
            "always_print_fields_with_no_presence": True,
            "preserving_proto_field_name": True,
            "indent": 1,
        }
        # TF Serving prints the SignatureDefMap itself under "signature_def", not as an Any.
        model_spec_json = json_format.MessageToJson(model_spec(name, version), **options)
        signature_json = json_format.MessageToJson(signature_def_map(signature_defs), **options)
        text = (
            f'{{\n"model_spec":{model_spec_json},\n"metadata": '
            f'{{"signature_def": {signature_json}}}\n}}\n'
        )
        return text.encode(), version


def _spec(name: str, version: str | None, label: str | None) -> RequestSpec:
    model_name = urllib.parse.unquote(name)
    parsed_version = None
    if version:
        digits = version.lstrip("0") or "0"  # int() refuses more than 4300 digits
        if len(digits) > len(str(MAX_INT64)) or int(digits) > MAX_INT64:
            raise invalid_argument(f"Failed to convert version: {version} to numeric.")
        parsed_version = int(digits)
    parsed_label = urllib.parse.unquote(label) if label else None
    return RequestSpec(model_name, parsed_version, parsed_label)
