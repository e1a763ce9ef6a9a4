"""The model manager: which versions of which models are loaded, and in what state.

It mirrors TF Serving's ServerCore with the AvailabilityPreservingPolicy: each model's base path
is polled for integer version folders; the version policy picks the ones to serve; new versions
load in the background (and are warmed up) while old ones keep serving; a version leaves only
once a version the policy wants is AVAILABLE. Folders whose names are not integers (the
trainer's `.staging-*` folders, for example) are ignored. A version that fails to load ends in
state END with its error, and the other versions keep serving.
"""

from __future__ import annotations

import concurrent.futures
import gc
import os
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from serving.config import ConfigError, ModelConfig
from serving.errors import Code, ServingError, failed_precondition, invalid_argument, not_found
from serving.logs import log

START, LOADING, AVAILABLE, UNLOADING, END = "START", "LOADING", "AVAILABLE", "UNLOADING", "END"


@dataclass
class VersionRecord:
    version: int
    state: str = START
    error: ServingError | None = None
    servable: object | None = None  # a LoadedVersion once AVAILABLE


def list_versions(base_path: str) -> dict[int, str]:
    """Version number -> folder name, for the integer-named sub-folders of `base_path`.

    The folder keeps its own name: TF Serving's test data (and many exporters) write versions
    zero-padded, `00000123`, which is version 123 and is loaded from `00000123`, as
    file_system_storage_path_source.cc does. Hidden or non-integer names are skipped. When two
    names give the same number (`123` and `0123`), the shortest (then smallest) name wins.
    """
    try:
        entries = os.scandir(base_path)
    except OSError:
        return {}
    versions: dict[int, str] = {}
    with entries:
        for entry in entries:
            name = entry.name
            if not (name.isascii() and name.isdigit()) or not entry.is_dir():
                continue
            version = int(name)
            known = versions.get(version)
            if known is None or (len(name), name) < (len(known), known):
                versions[version] = name
    return dict(sorted(versions.items()))


class ModelManager:
    """Loads, serves and unloads model versions; answers "which servable for this request"."""

    def __init__(
        self,
        models: list[ModelConfig],
        *,
        poll_seconds: int = 1,
        loader: Callable[[str, int, Path], object],
        warmup: Callable[[object], None] | None = None,
        on_state: Callable[[str, int, str], None] | None = None,
        allow_unavailable_labels: bool = False,
        collect_idle_seconds: float = 0.5,
        collect_after_swap_seconds: float = 5.0,
        collect_max_delay_seconds: float = 30.0,
    ) -> None:
        self._lock = threading.RLock()
        self._allow_unavailable_labels = allow_unavailable_labels
        self._configs: dict[str, ModelConfig] = {m.name: m for m in models}
        self._records: dict[str, dict[int, VersionRecord]] = {m.name: {} for m in models}
        self._poll_seconds = poll_seconds
        self._loader = loader
        self._warmup = warmup
        self._on_state = on_state or (lambda name, version, state: None)
        self._load_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="load")
        self._pending: dict[tuple[str, int], concurrent.futures.Future] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned_missing: set[str] = set()
        # Unloaded servables whose memory gc.freeze() may hold:
        # [weak reference, collected once, waiting since (monotonic)].
        self._unloaded: list[list] = []
        self._gc_lock = threading.Lock()  # a concurrent gc.collect() would return at once
        self._collect_idle_seconds = collect_idle_seconds
        self._collect_after_swap_seconds = collect_after_swap_seconds
        self._last_available = 0.0  # monotonic time a version last became AVAILABLE
        self._collect_max_delay_seconds = collect_max_delay_seconds
        self._last_request = 0.0  # monotonic time of the last resolve()
        self._janitor: threading.Thread | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self, wait: bool = True) -> None:
        """Poll once (waiting for the first loads, like TF Serving) and start polling.

        Raises FAILED_PRECONDITION, as TF Serving does at start-up, when the config has labels
        and --allow_version_labels_for_unavailable_models is off (nothing is loaded yet).
        """
        configs = list(self._configs.values())
        self._configs = {}
        self.check_labels(configs)
        self._configs = {m.name: m for m in configs}
        self.poll()
        if wait:
            self.wait_for_pending()
            self.poll()  # unload what the first loads made redundant
        if self._poll_seconds > 0:
            self._thread = threading.Thread(target=self._poll_loop, name="fs-poll", daemon=True)
            self._thread.start()
        self._janitor = threading.Thread(target=self._janitor_loop, name="gc", daemon=True)
        self._janitor.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        self._load_pool.shutdown(wait=False, cancel_futures=True)

    def wait_for_pending(self) -> None:
        while True:
            with self._lock:
                futures = list(self._pending.values())
            if not futures:
                return
            concurrent.futures.wait(futures)

    def _janitor_loop(self) -> None:
        while not self._stop.wait(0.25):
            try:
                self._free_unloaded()
            except Exception as error:  # freeing memory must never stop the server
                log("gc_failed", level="error", error=repr(error))

    def _poll_loop(self) -> None:
        while not self._stop.wait(self._poll_seconds):
            try:
                self.poll()
            except Exception as error:  # polling must survive anything the file system does
                log("poll_failed", level="error", error=repr(error))

    # ---- configuration ---------------------------------------------------------------------

    def model_names(self) -> list[str]:
        with self._lock:
            return list(self._configs)

    def config(self, name: str) -> ModelConfig | None:
        with self._lock:
            return self._configs.get(name)

    def check_labels(self, models: list[ModelConfig]) -> None:
        """TF Serving's rule: a label may only point at an AVAILABLE version, except that with
        --allow_version_labels_for_unavailable_models a *new* label may point anywhere."""
        with self._lock:
            for model in models:
                old = self._configs.get(model.name)
                old_labels = old.labels if old else {}
                for label, version in model.labels.items():
                    if old_labels.get(label) == version:
                        continue
                    if self._allow_unavailable_labels and label not in old_labels:
                        continue
                    record = self._records.get(model.name, {}).get(version)
                    if record is None or record.state != AVAILABLE:
                        raise failed_precondition(
                            f"Request to assign label to version {version} of model "
                            f"{model.name}, which is not currently available for inference"
                        )

    def apply_config(self, models: list[ModelConfig]) -> None:
        """Switch to a new model list (HandleReloadConfigRequest or a changed config file)."""
        with self._lock:
            self.check_labels(models)
            new = {m.name: m for m in models}
            if new == self._configs:
                return
            self._configs = new
            for name in new:
                self._records.setdefault(name, {})
            log("config_applied", models=",".join(sorted(new)) or "-")
        self.poll()

    # ---- polling, loading, unloading ---------------------------------------------------------

    def poll(self, names: list[str] | None = None) -> None:
        """Bring the given models (default: all) in line with their folders and policies."""
        with self._lock:
            configs = dict(self._configs)
            wanted = set(configs) | set(self._records) if names is None else set(names)
        # List folders without the lock: on a slow (network) file system, requests resolving
        # their servable must not wait for a listing.
        listings = {name: list_versions(configs[name].base_path) for name in wanted & set(configs)}
        with self._lock:
            for name in wanted:
                config = self._configs.get(name)
                if config is not None and config is not configs.get(name):
                    listings[name] = list_versions(config.base_path)  # changed meanwhile
                self._poll_model(name, listings.get(name, {}))
        self._free_unloaded()

    def _poll_model(self, name: str, on_disk: dict[int, str]) -> None:
        config = self._configs.get(name)
        records = self._records.setdefault(name, {})
        if config is None:
            aspired: set[int] = set()
        else:
            if not on_disk and name not in self._warned_missing:
                self._warned_missing.add(name)
                log("no_versions_found", level="warning", model=name, base_path=config.base_path)
            elif on_disk:
                self._warned_missing.discard(name)
            aspired = config.policy.select(list(on_disk))
        for version in sorted(aspired):
            record = records.get(version)
            if (name, version) in self._pending:
                continue
            if record is None or (record.state == END and record.error is None):
                record = VersionRecord(version)
                records[version] = record
                self._set_state(name, record, START)
                path = Path(config.base_path) / on_disk[version]
                self._pending[(name, version)] = self._load_pool.submit(
                    self._load, name, record, path
                )
        aspired_available = any(records[v].state == AVAILABLE for v in aspired if v in records)
        for version, record in list(records.items()):
            if version in aspired or record.state != AVAILABLE:
                continue
            if aspired_available or not aspired:
                self._unload(name, record)

    def _load(self, name: str, record: VersionRecord, path: Path) -> None:
        started = time.monotonic()
        try:
            with self._lock:
                self._set_state(name, record, LOADING)
            servable = self._loader(name, record.version, path)
            if self._warmup is not None:
                self._warmup(servable)
            # TensorFlow and a loaded model leave hundreds of thousands of long-lived objects.
            # Parsing one REST body allocates ~50k lists, which triggers full collections that
            # walk all of them (~140 ms each, every other request). Freezing moves the
            # long-lived objects out of the collector's reach. Freezing alone costs nothing;
            # a collection (0.2-0.4 s with the GIL held) would stall the requests the old
            # version is still answering, so garbage waits for _free_unloaded.
            gc.freeze()
        except ServingError as error:
            self._fail(name, record, error)
        except Exception as error:  # a broken model must never take the server down
            self._fail(name, record, ServingError(Code.UNKNOWN, f"{type(error).__name__}: {error}"))
        else:
            with self._lock:
                record.servable = servable
                self._set_state(name, record, AVAILABLE)
                self._last_available = time.monotonic()
            log(
                "version_loaded", model=name, version=record.version,
                seconds=f"{time.monotonic() - started:.2f}",
            )  # fmt: skip
        finally:
            with self._lock:
                self._pending.pop((name, record.version), None)
        if not self._stop.is_set():
            self.poll([name])

    def _fail(self, name: str, record: VersionRecord, error: ServingError) -> None:
        with self._lock:
            record.error = error
            record.servable = None
            self._set_state(name, record, END)
        log("version_load_failed", level="error", model=name, version=record.version,
            code=error.code.name, error=error.message)  # fmt: skip

    def _unload(self, name: str, record: VersionRecord) -> None:
        self._set_state(name, record, UNLOADING)
        servable, record.servable = record.servable, None
        # In-flight requests hold their own reference; the servable is freed after them. The
        # manager keeps one too until _free_unloaded lets go: tearing a TensorFlow session
        # down takes milliseconds of the GIL, which must not land on the new version's first
        # requests either.
        now = time.monotonic()
        try:
            self._unloaded.append([weakref.ref(servable), False, now, servable])
        except TypeError:  # not weakly referenceable: collect once
            self._unloaded.append([lambda: None, False, now, servable])
        del servable
        self._set_state(name, record, END)
        log("version_unloaded", model=name, version=record.version)

    def _free_unloaded(self) -> None:
        """Give unloaded versions' memory back despite gc.freeze(), off the request path.

        The freeze after each load put the version's objects in the permanent generation; its
        reference cycles (TensorFlow's graphs) are freed only by a full collection after
        gc.unfreeze(), which holds the GIL for 0.2-0.4 s. The moment to avoid is a swap:
        clients send their first requests to a new version as soon as it is AVAILABLE. So the
        collection waits until no load is pending, `collect_after_swap_seconds` have passed
        since a version last became AVAILABLE, and requests have paused for
        `collect_idle_seconds`; under constant load or constant rollouts it runs anyway once a
        version has waited `collect_max_delay_seconds`. One collection runs after the unload;
        a version still held by requests in flight gets one more once they have let it go.
        Runs outside the lock, so requests keep resolving.
        """
        now = time.monotonic()
        with self._lock:
            fresh = [entry for entry in self._unloaded if not entry[1]]
            waiting = fresh or [e for e in self._unloaded if e[0]() is None]
            if not waiting:
                return
            quiet = (
                not self._pending
                and now - self._last_available >= self._collect_after_swap_seconds
                and now - self._last_request >= self._collect_idle_seconds
            )
            overdue = now - min(entry[2] for entry in waiting) >= self._collect_max_delay_seconds
            if not (quiet or overdue):
                return
            held = [entry[3] for entry in fresh]
            for entry in fresh:
                entry[3] = None
        del held  # the versions no request holds any more are torn down here, on this thread
        with self._lock:
            released = {id(entry) for entry in self._unloaded if entry[0]() is None}
        self._collect_and_freeze()
        with self._lock:
            for entry in fresh:
                entry[1] = True
            # Only entries already released before this collection are done with; one that
            # was let go meanwhile gets the next collection, and waits from now.
            self._unloaded = [entry for entry in self._unloaded if id(entry) not in released]
            for entry in self._unloaded:
                entry[2] = max(entry[2], now)

    def _collect_and_freeze(self) -> None:
        with self._gc_lock:
            started = time.monotonic()
            gc.unfreeze()
            freed = gc.collect()
            gc.freeze()
            log("gc_collected", objects=freed, frozen=gc.get_freeze_count(),
                seconds=f"{time.monotonic() - started:.3f}")  # fmt: skip

    def _set_state(self, name: str, record: VersionRecord, state: str) -> None:
        record.state = state
        self._on_state(name, record.version, state)

    # ---- queries ---------------------------------------------------------------------------

    def resolve(self, name: str, version: int | None = None, label: str | None = None):
        """The servable for a request, or TF Serving's NOT_FOUND / INVALID_ARGUMENT error."""
        with self._lock:
            self._last_request = time.monotonic()
            if label:
                config = self._configs.get(name)
                if config is None or label not in config.labels:
                    raise invalid_argument(f"Unrecognized servable version label: {label}")
                version = config.labels[label]
            records = self._records.get(name, {})
            if version is None:
                available = [v for v, r in records.items() if r.state == AVAILABLE]
                if not available:
                    raise not_found(f"Servable not found for request: Latest({name})")
                return records[max(available)].servable
            record = records.get(version)
            if record is None or record.state != AVAILABLE:
                raise not_found(f"Servable not found for request: Specific({name}, {version})")
            return record.servable

    def version_states(self, name: str, version: int | None = None) -> list[VersionRecord]:
        """Records newest first, as TF Serving lists them; NOT_FOUND as TF Serving words it."""
        with self._lock:
            records = self._records.get(name, {})
            if version is not None:
                record = records.get(version)
                if record is None:
                    raise not_found(f"Could not find version {version} of model {name}")
                return [VersionRecord(record.version, record.state, record.error)]
            if not records:
                raise not_found(f"Could not find any versions of model {name}")
            return [
                VersionRecord(r.version, r.state, r.error)
                for r in sorted(records.values(), key=lambda r: r.version, reverse=True)
            ]


class ConfigFileWatcher:
    """Re-reads --model_config_file every N seconds and applies it, changed or not.

    As in TF Serving (server.cc PollFilesystemAndReloadConfig), the file is the truth: a label
    moved only by HandleReloadConfigRequest snaps back on the next poll. A file that fails to
    parse, or that the manager refuses (a label on a version that is not AVAILABLE), is logged
    and tried again on the next poll; the running config stays.
    """

    def __init__(self, path: str, seconds: int, manager: ModelManager, read) -> None:
        self._path, self._seconds, self._manager, self._read = path, seconds, manager, read
        self._last_error = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="config-poll", daemon=True)

    def start(self) -> None:
        if self._seconds > 0:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def check(self) -> None:
        try:
            self._manager.apply_config(self._read(self._path))
            self._last_error = ""
        except (ConfigError, ServingError) as error:
            message = error.message if isinstance(error, ServingError) else str(error)
            if message != self._last_error:  # one line per distinct problem, not per poll
                log("config_reload_failed", level="error", path=self._path, error=message)
            self._last_error = message

    def _loop(self) -> None:
        while not self._stop.wait(self._seconds):
            self.check()
