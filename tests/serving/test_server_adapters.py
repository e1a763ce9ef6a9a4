"""The REST and gRPC adapters without a server: --rest_api_num_threads bounds the REST work
running at once, and a bug inside a request (not a ServingError) still answers in TF Serving's
error format and is counted as failed."""

from __future__ import annotations

import asyncio
import threading
import time

import orjson
import pytest

from serving.metrics import Metrics


class BrokenDataPlane:
    def status(self, spec):
        raise RuntimeError("boom")


async def asgi_get_async(app, path: str) -> tuple[int, bytes]:
    """One GET through an ASGI app, without a server."""
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": [], "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2),
    }  # fmt: skip
    await app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, body


def asgi_get(app, path: str) -> tuple[int, bytes]:
    return asyncio.run(asgi_get_async(app, path))


def test_rest_api_num_threads_bounds_the_requests_running_at_once():
    from serving.rest import RestApi

    class SlowDataPlane:
        def __init__(self) -> None:
            self.lock = threading.Lock()
            self.running = self.most = 0

        def status(self, spec):
            with self.lock:
                self.running += 1
                self.most = max(self.most, self.running)
            time.sleep(0.2)
            with self.lock:
                self.running -= 1
            return []

    dataplane = SlowDataPlane()
    app = RestApi(dataplane, Metrics(), num_threads=2, timeout_ms=0, prometheus_path=None)

    async def six_at_once():
        return await asyncio.gather(*(asgi_get_async(app, "/v1/models/m") for _ in range(6)))

    replies = asyncio.run(six_at_once())
    assert [status for status, _ in replies] == [200] * 6
    assert dataplane.most == 2


def test_rest_answers_a_bug_with_a_json_500_counted_as_unknown():
    from serving.rest import RestApi

    metrics = Metrics()
    app = RestApi(BrokenDataPlane(), metrics, num_threads=2, timeout_ms=0, prometheus_path=None)
    status, body = asgi_get(app, "/v1/models/m")
    assert status == 500
    assert orjson.loads(body) == {"error": "RuntimeError: boom"}
    assert 'API="GetModelStatus",entrypoint="REST",status="UNKNOWN"} 1' in metrics.render()


def test_grpc_counts_a_bug_as_unknown():
    import grpc
    from tensorflow_serving.apis import get_model_status_pb2

    from serving.grpc_service import ModelService

    class Aborted(Exception):
        pass

    class Context:
        def abort(self, code, details):
            self.code, self.details = code, details
            raise Aborted

    metrics = Metrics()
    service = ModelService(BrokenDataPlane(), metrics)
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "m"
    context = Context()
    with pytest.raises(Aborted):
        service.GetModelStatus(request, context)
    assert context.code == grpc.StatusCode.UNKNOWN
    assert context.details == "RuntimeError: boom"
    assert 'API="GetModelStatus",entrypoint="GRPC",status="UNKNOWN"} 1' in metrics.render()
