"""The cheapest servers the local server's frameworks allow: the floor under its overhead.

    python benchmarks/floor_servers.py grpc PORT   # grpcio's sync server, as serving/ builds it
    python benchmarks/floor_servers.py rest PORT   # uvicorn, httptools, uvloop, as serving/ runs

Each answers the local server's predict call (gRPC PredictionService/Predict, REST POST
/v1/models/<name>:predict) without parsing the request or running a model: the gRPC one with
an empty PredictResponse, the REST one with a fixed `{"predictions": ...}`. The same clients'
p50 against these servers is what a request costs with no server code at all, so
`server_overhead.py` can say how much of the local server's overhead is its own and how much
is the frameworks' (and the Python clients' on the same cores).
"""

from __future__ import annotations

import sys
from concurrent import futures

# A reply of the same length as the local server's for one MNIST digit.
REST_REPLY = (
    b'{"predictions": [{"probabilities": [0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1],'
    b' "class_ids": 0, "classes": "0"}]}'
)


def serve_grpc(port: int) -> None:
    import grpc

    def predict(request: bytes, context) -> bytes:
        return b""  # an empty PredictResponse

    def same(data: bytes) -> bytes:
        return data

    handler = grpc.method_handlers_generic_handler(
        "tensorflow.serving.PredictionService",
        {"Predict": grpc.unary_unary_rpc_method_handler(predict, same, same)},
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    server.add_generic_rpc_handlers([handler])
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


async def rest_app(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": REST_REPLY})


def serve_rest(port: int) -> None:
    import uvicorn

    uvicorn.run(
        rest_app, host="127.0.0.1", port=port, http="httptools", loop="uvloop",
        log_level="warning", access_log=False, lifespan="off",
    )  # fmt: skip


if __name__ == "__main__":
    kind, port = sys.argv[1], int(sys.argv[2])
    {"grpc": serve_grpc, "rest": serve_rest}[kind](port)
