"""Connect to a TF Serving compatible server; the address's scheme picks the transport.

    grpc://HOST:PORT    gRPC, plain text (TF Serving's --port, 8500 by convention)
    grpcs://HOST:PORT   gRPC over TLS
    http://HOST:PORT    REST (TF Serving's --rest_api_port, 8501 by convention)
    https://HOST:PORT   REST over TLS

Only the chosen transport's libraries are imported: the REST one never imports TensorFlow or grpc.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from client.transport.base import RetryPolicy, Transport

__all__ = ["RetryPolicy", "ServerAddress", "Transport", "connect", "parse_server"]

SCHEMES = ("grpc", "grpcs", "http", "https")
DEFAULT_PORTS = {"grpc": 8500, "grpcs": 8500, "http": 8501, "https": 8501}


@dataclass(frozen=True)
class ServerAddress:
    scheme: str  # one of SCHEMES
    host: str
    port: int
    path: str = ""  # REST only: a prefix in front of /v1 (a proxy's route)

    @property
    def target(self) -> str:
        """host:port, with IPv6 hosts in brackets, as grpc channels want it."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.target}{self.path}"


def parse_server(server: str) -> ServerAddress:
    """Parse "grpc://host:8500" or "http://host:8501"; raises ValueError saying what is wrong."""
    text = server.strip()
    if "://" not in text:
        raise ValueError(
            f"server address {server!r} has no scheme: write grpc://{text or 'HOST:8500'} "
            f"or http://{text or 'HOST:8501'} (schemes: {', '.join(s + '://' for s in SCHEMES)})"
        )
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(
            f"unknown scheme {parts.scheme + '://'!r} in {server!r} "
            f"(schemes: {', '.join(s + '://' for s in SCHEMES)})"
        )
    if not parts.hostname:
        raise ValueError(f"server address {server!r} has no host")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"server address {server!r} has an invalid port") from None
    path = parts.path.rstrip("/")
    if path and scheme.startswith("grpc"):
        raise ValueError(f"gRPC server address {server!r} cannot have a path")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"server address {server!r} may only have a scheme, host, port and path")
    return ServerAddress(scheme, parts.hostname, port or DEFAULT_PORTS[scheme], path)


def connect(
    server: str,
    *,
    timeout: float = 30.0,
    retries: int = 3,
    max_connections: int = 8,
) -> Transport:
    """A transport for `server` (see the module docstring for the address forms).

    timeout: default deadline of each request, in seconds.
    retries: extra attempts when the server is unavailable (connection refused, HTTP 503, gRPC
        UNAVAILABLE), with exponential backoff and jitter; other errors are raised at once.
    max_connections: REST only, the size of the keep-alive pool (use the request concurrency).
    Raises ValueError for a malformed address, ModuleNotFoundError (saying what to install) when
    the transport's libraries are missing. Connecting is lazy: nothing is sent until the
    first call, so an unreachable server shows up as ClientError("UNAVAILABLE") there.
    """
    if timeout <= 0:
        raise ValueError(f"timeout must be positive, not {timeout}")
    address = parse_server(server)
    retry = RetryPolicy(retries=retries)
    if address.scheme.startswith("grpc"):
        from client.transport.grpc_transport import GrpcTransport

        return GrpcTransport(
            address.target,
            timeout=timeout,
            retry=retry,
            secure=address.scheme == "grpcs",
            server=str(address),
        )
    try:
        from client.transport.rest_transport import RestTransport
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(
            f"the REST transport needs {error.name!r}: install the client extra "
            "(pip install 'digits-serving[client]')",
            name=error.name,
        ) from error
    return RestTransport(
        str(address), timeout=timeout, retry=retry, max_connections=max_connections
    )
