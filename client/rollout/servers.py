"""What each server reports, and waiting until every one of them shows a rollout step.

A rollout step is a file write; each server applies it on its next config poll
(`--model_config_file_poll_wait_seconds`), replicas at different moments. The status call lists
the versions and their states; labels are resolved through the metadata call, which honours
them (TF Serving's status call ignores labels, see client.commands.common.model_versions).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from client.errors import ClientError
from client.transport import Transport, connect
from client.types import ModelSpec

POLL_SECONDS = 0.5


class WaitTimeout(Exception):
    """A step the servers did not show in time; the message says which server and what it shows."""


@dataclass
class ServerView:
    """One server's answer: versions and their states, and where each label resolves."""

    server: str
    states: dict[int, str] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)  # version -> its load error
    labels: dict[str, int | str] = field(default_factory=dict)  # label -> version, or the error
    error: str | None = None  # the server could not be asked at all

    def available(self, version: int) -> bool:
        return self.states.get(version) == "AVAILABLE"


def expand(servers: list[str], resolve: bool) -> list[str]:
    """The servers to ask; with `resolve`, one per address a host name resolves to (the pods
    behind a headless Kubernetes Service)."""
    if not resolve:
        return list(dict.fromkeys(servers))
    expanded = []
    for server in servers:
        parts = urlsplit(server)
        try:
            infos = socket.getaddrinfo(parts.hostname, parts.port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as error:
            raise ValueError(
                f"--server {server}: cannot resolve {parts.hostname}: {error}"
            ) from None
        for info in infos:
            host = info[4][0]
            host = f"[{host}]" if ":" in host else host
            netloc = f"{host}:{parts.port}" if parts.port else host
            expanded.append(parts._replace(netloc=netloc).geturl())
    return list(dict.fromkeys(expanded))


class Servers:
    """Transports to every server of a rollout, opened once."""

    def __init__(self, servers: list[str], *, timeout: float = 10.0) -> None:
        if not servers:
            raise ValueError("give at least one --server")
        self.addresses = servers
        self._transports: dict[str, Transport] = {
            server: connect(server, timeout=timeout, retries=0) for server in servers
        }

    def close(self) -> None:
        for transport in self._transports.values():
            transport.close()

    def __enter__(self) -> Servers:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def transport(self, server: str) -> Transport:
        return self._transports[server]

    def view(self, server: str, model: str, labels: list[str]) -> ServerView:
        transport = self._transports[server]
        view = ServerView(server)
        try:
            for status in transport.status(ModelSpec(name=model)):
                view.states[status.version] = status.state
                if status.error_code != "OK":
                    view.errors[status.version] = f"{status.error_code}: {status.error_message}"
        except ClientError as error:
            view.error = str(error)
            return view
        for label in labels:
            try:
                view.labels[label] = transport.metadata(ModelSpec(name=model, label=label)).version
            except ClientError as error:
                view.labels[label] = str(error)
        return view

    def views(self, model: str, labels: list[str]) -> list[ServerView]:
        return [self.view(server, model, labels) for server in self.addresses]

    def wait(
        self,
        model: str,
        labels: list[str],
        done: Callable[[ServerView], str | None],
        timeout: float,
        what: str,
    ) -> list[ServerView]:
        """Poll every server until `done(view)` returns None for all of them.

        `done` returns what is still missing on that server ("version 3 is LOADING"), or None.
        A view whose version failed to load ends the wait at once: waiting cannot fix it.
        Raises WaitTimeout naming the first server that still lacks the step.
        """
        deadline = time.monotonic() + timeout
        while True:
            views = self.views(model, labels)
            missing = [(view, done(view)) for view in views]
            missing = [(view, reason) for view, reason in missing if reason is not None]
            if not missing:
                return views
            for view, reason in missing:
                if reason.startswith("failed:"):
                    raise WaitTimeout(f"{view.server}: {reason.removeprefix('failed:').strip()}")
            if time.monotonic() >= deadline:
                view, reason = missing[0]
                others = f" (and {len(missing) - 1} more servers)" if len(missing) > 1 else ""
                raise WaitTimeout(
                    f"{what}: not shown by {view.server}{others} after {timeout:g} s: {reason}"
                )
            time.sleep(POLL_SECONDS)


def version_available(version: int) -> Callable[[ServerView], str | None]:
    def check(view: ServerView) -> str | None:
        if view.error:
            return view.error
        if view.available(version):
            return None
        if version in view.errors and view.states.get(version) == "END":
            return f"failed: version {version} failed to load ({view.errors[version]})"
        state = view.states.get(version)
        return f"version {version} is {state}" if state else f"version {version} is not listed"

    return check


def labels_at(expected: dict[str, int]) -> Callable[[ServerView], str | None]:
    def check(view: ServerView) -> str | None:
        if view.error:
            return view.error
        for label, version in expected.items():
            actual = view.labels.get(label)
            if actual != version:
                return f"{label} resolves to {actual if actual is not None else 'nothing'}"
        return None

    return check
