"""The one error type both transports raise, and the exit codes of the CLI."""

from __future__ import annotations

# gRPC status code names, which TF Serving also uses in its REST error bodies and status replies.
STATUS_CODES = (
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
)

# Exit codes of `python -m client` commands (documented in docs/client.md).
EXIT_OK = 0
EXIT_ERROR = 1  # the server or the model failed: unreachable, not found, rejected the request
EXIT_USAGE = 2  # bad command line or input (typer/click also exit 2 on usage errors)
EXIT_PARTIAL = 3  # the command ran, but some images could not be scored
EXIT_INTERRUPTED = 130  # Ctrl-C; what was written so far is kept


class ClientError(Exception):
    """A failed call to the model server, with the gRPC status code name TF Serving would give.

    Both transports raise it for the same situation with the same `code`, e.g. "NOT_FOUND" for an
    unknown model or version, "INVALID_ARGUMENT" for a malformed request, "UNAVAILABLE" when the
    server cannot be reached (after retries), "DEADLINE_EXCEEDED" when a request timed out.
    """

    def __init__(self, message: str, code: str = "UNKNOWN") -> None:
        if code not in STATUS_CODES:
            raise ValueError(f"unknown status code {code!r}")
        super().__init__(message)
        self.message = message
        self.code = code

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def __reduce__(self):  # keeps the code when pickled (process pools, logging handlers)
        return (type(self), (self.message, self.code))
