"""tensorflow.ProfilerService on the gRPC port, as TF Serving registers it (--enable_profiler).

`tf.profiler.experimental.client.trace(address, logdir, duration_ms)` (and TensorBoard's
"capture profile") call `Profile`: the server records a TensorFlow profiler session for
`duration_ms`, writes the XSpace to `<repository_root>/<session_id>/<host_name>.xplane.pb`
on its own file system (tsl profiler_service_impl.cc, CollectDataToRepository), and answers
`empty_trace: false`. `Terminate` ends a running session early; `Monitor` is not implemented.

The file lands where the request says, as in TF Serving; the names it is made of may not climb
out of `repository_root`, which must be absolute.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time

import grpc

from serving.logs import log
from serving.protos import profiler_message

SERVICE = "tensorflow.ProfilerService"
MAX_DURATION_MS = 10 * 60 * 1000
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


class ProfilerService:
    def __init__(self) -> None:
        self._lock = threading.Lock()  # TensorFlow allows one profiler session at a time
        self._terminated: set[str] = set()

    def profile(self, request, context):
        response_type = profiler_message("ProfileResponse")
        root = request.repository_root
        session_id = _SAFE_NAME.sub("_", request.session_id) or time.strftime("%Y_%m_%d_%H_%M_%S")
        host = _SAFE_NAME.sub("_", request.host_name or socket.gethostname()) or "localhost"
        if not os.path.isabs(root) or session_id in (".", ".."):
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "repository_root must be an absolute path and session_id a plain name",
            )
        duration = min(request.duration_ms, MAX_DURATION_MS) / 1000
        if not self._lock.acquire(blocking=False):
            context.abort(grpc.StatusCode.UNAVAILABLE, "Another profiling session is active.")
        try:
            from tensorflow.python.profiler.internal import _pywrap_profiler

            session = _pywrap_profiler.ProfilerSession()
            session.start("", {})
            deadline = time.monotonic() + duration
            while time.monotonic() < deadline and context.is_active():
                if session_id in self._terminated:
                    break
                time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
            xspace = session.stop()
        finally:
            self._terminated.discard(session_id)
            self._lock.release()
        response = response_type(empty_trace=not xspace)
        if xspace:
            folder = os.path.join(root, session_id)
            os.makedirs(folder, exist_ok=True)
            path = os.path.join(folder, f"{host}.xplane.pb")
            with open(path, "wb") as file:
                file.write(xspace)
            log("profile_written", path=path, seconds=f"{duration:.1f}", bytes=len(xspace))
        return response

    def terminate(self, request, context):
        self._terminated.add(_SAFE_NAME.sub("_", request.session_id))
        return profiler_message("TerminateResponse")()

    def monitor(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "Monitor is not supported")


def add_profiler_service(server) -> None:
    service = ProfilerService()

    def unary(method, request_name: str, response_name: str):
        return grpc.unary_unary_rpc_method_handler(
            method,
            request_deserializer=profiler_message(request_name).FromString,
            response_serializer=lambda message: message.SerializeToString(),
        )

    handlers = {
        "Profile": unary(service.profile, "ProfileRequest", "ProfileResponse"),
        "Terminate": unary(service.terminate, "TerminateRequest", "TerminateResponse"),
        "Monitor": grpc.unary_unary_rpc_method_handler(
            service.monitor, request_deserializer=None, response_serializer=None
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
