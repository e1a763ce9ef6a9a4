"""Prometheus metrics, served on the REST port at the monitoring config's path.

Names follow TF Serving where it has an equivalent:
- `:tensorflow:serving:request_count{model_name,status}` (counter; status is the code name),
- `:tensorflow:serving:request_latency{model_name,API,entrypoint}` (histogram, microseconds),
  both for Predict, Classify and Regress only, as in TF Serving,
- `:tensorflow:serving:runtime_latency{model_name,API,runtime}` (histogram, microseconds),
- `:tensorflow:cc:saved_model:load_attempt_count{model_path,status}` (counter).
TF Serving has no per-version request metric and no load-state gauge; those are local:
- `:local_server:request_count{model_name,version,API,entrypoint,status}` (counter, every API),
- `:local_server:model_version_state{model_name,version,state}` (gauge, 1 for the current state).
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict

INFERENCE_APIS = {"Predict", "Classify", "Regress"}
# TF Serving's request latency buckets: exponential, 10 us * 1.8^i (33 buckets).
BUCKETS = [10 * 1.8**i for i in range(33)]


class _Histogram:
    __slots__ = ("counts", "sum", "total")

    def __init__(self) -> None:
        self.counts = [0] * len(BUCKETS)
        self.sum = 0.0
        self.total = 0

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(BUCKETS, value)
        if index < len(BUCKETS):
            self.counts[index] += 1
        self.sum += value
        self.total += 1


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._request_count: dict[tuple, int] = defaultdict(int)
        self._version_count: dict[tuple, int] = defaultdict(int)
        self._latency: dict[tuple, _Histogram] = defaultdict(_Histogram)
        self._runtime: dict[tuple, _Histogram] = defaultdict(_Histogram)
        self._load_attempts: dict[tuple, int] = defaultdict(int)
        self._states: dict[tuple, str] = {}

    def request(
        self, model: str, version: int | None, api: str, entrypoint: str, status: str,
        seconds: float,
    ) -> None:  # fmt: skip
        micros = seconds * 1e6
        with self._lock:
            if api in INFERENCE_APIS:  # TF Serving counts inference calls only
                self._request_count[(model, status)] += 1
                self._latency[(model, api, entrypoint)].observe(micros)
            version_label = "" if version is None else str(version)
            self._version_count[(model, version_label, api, entrypoint, status)] += 1

    def runtime(self, model: str, api: str, seconds: float) -> None:
        with self._lock:
            # TF Serving labels its SavedModel-session path "TF1" whatever the model's origin.
            self._runtime[(model, api, "TF1")].observe(seconds * 1e6)

    def load_attempt(self, path: str, status: str) -> None:
        with self._lock:
            self._load_attempts[(path, status)] += 1

    def state(self, model: str, version: int, state: str) -> None:
        with self._lock:
            self._states[(model, str(version))] = state

    def render(self) -> str:
        """The Prometheus text exposition format (0.0.4)."""
        lines: list[str] = []

        def labels(names, values) -> str:
            parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
            return "{" + ",".join(parts) + "}"

        def counter(name, help_text, names, data) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} counter")
            for key, value in sorted(data.items()):
                lines.append(f"{name}{labels(names, key)} {value}")

        def histogram(name, help_text, names, data) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} histogram")
            for key, hist in sorted(data.items()):
                cumulative = 0
                for bound, count in zip(BUCKETS, hist.counts, strict=True):
                    cumulative += count
                    bucket = labels((*names, "le"), (*key, _bucket_limit(bound)))
                    lines.append(f"{name}_bucket{bucket} {cumulative}")
                lines.append(f"{name}_bucket{labels((*names, 'le'), (*key, '+Inf'))} {hist.total}")
                lines.append(f"{name}_sum{labels(names, key)} {_number(hist.sum)}")
                lines.append(f"{name}_count{labels(names, key)} {hist.total}")

        with self._lock:
            counter(
                ":tensorflow:serving:request_count",
                "The total number of requests.",
                ("model_name", "status"),
                self._request_count,
            )
            histogram(
                ":tensorflow:serving:request_latency",
                "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
                ("model_name", "API", "entrypoint"),
                self._latency,
            )
            histogram(
                ":tensorflow:serving:runtime_latency",
                "Distribution of wall time (in microseconds) for Tensorflow runtime.",
                ("model_name", "API", "runtime"),
                self._runtime,
            )
            counter(
                ":tensorflow:cc:saved_model:load_attempt_count",
                "The number of times a SavedModel was successfully loaded.",
                ("model_path", "status"),
                self._load_attempts,
            )
            counter(
                ":local_server:request_count",
                "Requests per model version, API, entrypoint and status (local server only).",
                ("model_name", "version", "API", "entrypoint", "status"),
                self._version_count,
            )
            lines.append(
                "# HELP :local_server:model_version_state 1 for each model version's current "
                "state (local server only)."
            )
            lines.append("# TYPE :local_server:model_version_state gauge")
            for (model, version), state in sorted(self._states.items()):
                key = labels(("model_name", "version", "state"), (model, version, state))
                lines.append(f":local_server:model_version_state{key} 1")
        return "\n".join(lines) + "\n"


def _escape(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _bucket_limit(value: float) -> str:
    # TF Serving's exporter writes limits with absl::StrCat (six significant digits), so
    # selectors such as le="58.32" match the same series on both servers.
    return format(value, ".6g")


def _number(value: float) -> str:
    return repr(float(value)) if value != int(value) else f"{int(value)}"
