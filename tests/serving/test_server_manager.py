"""The model manager with a fake loader: version policy, no gap on swap, failures, labels."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from pathlib import Path

import pytest

from serving.config import ModelConfig, VersionPolicy
from serving.errors import Code, ServingError
from serving.manager import ModelManager, list_versions


class FakeServable:
    def __init__(self, name: str, version: int) -> None:
        self.name, self.version = name, version


class FakeLoader:
    """Loads instantly, or blocks versions in `hold` until released; fails versions in `fail`."""

    def __init__(self) -> None:
        self.hold: dict[int, threading.Event] = {}
        self.fail: set[int] = set()
        self.loaded: list[int] = []
        self.paths: list[Path] = []

    def __call__(self, name: str, version: int, path: Path) -> FakeServable:
        if version in self.hold:
            self.hold[version].wait(10)
        if version in self.fail:
            raise ServingError(Code.DATA_LOSS, f"Can't parse {path}/saved_model.pb")
        self.loaded.append(version)
        self.paths.append(path)
        return FakeServable(name, version)


def make_versions(base: Path, *versions: int) -> None:
    for version in versions:
        (base / str(version)).mkdir(parents=True, exist_ok=True)


def states(manager: ModelManager, name: str = "m") -> dict[int, str]:
    return {r.version: r.state for r in manager.version_states(name)}


@pytest.fixture
def base(tmp_path: Path) -> Path:
    path = tmp_path / "m"
    path.mkdir()
    return path


def manager_for(base: Path, loader, policy=VersionPolicy(), labels=None, **kwargs):
    config = ModelConfig("m", str(base), policy, labels or {})
    return ModelManager([config], poll_seconds=0, loader=loader, **kwargs)


def test_list_versions_ignores_non_integer_and_files(base):
    make_versions(base, 1, 10, 2)
    for name in (".staging-3", "tmp", "3a", "-4"):
        (base / name).mkdir()
    (base / "5").write_text("a file, not a version folder")
    assert list_versions(str(base)) == {1: "1", 2: "2", 10: "10"}
    assert list_versions(str(base / "missing")) == {}


def test_zero_padded_version_folders_keep_their_name(base):
    # TF Serving's own test data names versions 00000123 (file_system_storage_path_source.cc
    # parses the number and keeps the folder's real path); "٣" is a digit but not ASCII.
    for name in ("00000123", "124", "0124", "\u0663"):
        (base / name).mkdir()
    assert list_versions(str(base)) == {123: "00000123", 124: "124"}


def test_zero_padded_version_is_loaded_from_its_own_folder(base):
    (base / "00000007").mkdir()
    loader = FakeLoader()
    manager = manager_for(base, loader)
    manager.start()
    assert manager.resolve("m").version == 7
    assert loader.paths == [base / "00000007"]


def test_latest_policy_loads_newest_and_unloads_old(base):
    make_versions(base, 1, 2)
    loader = FakeLoader()
    manager = manager_for(base, loader)
    manager.start()
    assert states(manager) == {2: "AVAILABLE"}
    assert manager.resolve("m").version == 2
    make_versions(base, 3)
    manager.poll()
    manager.wait_for_pending()
    assert states(manager) == {2: "END", 3: "AVAILABLE"}
    manager.stop()


def test_no_gap_while_the_new_version_loads(base):
    make_versions(base, 1)
    loader = FakeLoader()
    manager = manager_for(base, loader)
    manager.start()
    loader.hold[2] = threading.Event()
    make_versions(base, 2)
    manager.poll()
    # Version 2 is loading: version 1 must keep answering.
    assert states(manager)[2] in ("START", "LOADING")
    assert states(manager)[1] == "AVAILABLE"
    assert manager.resolve("m").version == 1
    loader.hold[2].set()
    manager.wait_for_pending()
    assert states(manager) == {1: "END", 2: "AVAILABLE"}
    assert manager.resolve("m").version == 2
    manager.stop()


def test_failed_version_ends_with_its_error_and_others_keep_serving(base):
    make_versions(base, 1, 2)
    loader = FakeLoader()
    loader.fail.add(2)
    manager = manager_for(base, loader, VersionPolicy("all"))
    manager.start()
    records = {r.version: r for r in manager.version_states("m")}
    assert records[2].state == "END"
    assert records[2].error.code == Code.DATA_LOSS
    assert "saved_model.pb" in records[2].error.message
    assert records[1].state == "AVAILABLE"
    assert manager.resolve("m").version == 1
    manager.poll()  # a failed version is not retried on every poll
    manager.wait_for_pending()
    assert loader.loaded == [1]
    manager.stop()


def test_latest_keeps_old_version_when_new_one_fails(base):
    make_versions(base, 1)
    loader = FakeLoader()
    manager = manager_for(base, loader)
    manager.start()
    loader.fail.add(2)
    make_versions(base, 2)
    manager.poll()
    manager.wait_for_pending()
    assert states(manager) == {1: "AVAILABLE", 2: "END"}
    assert manager.resolve("m").version == 1
    manager.stop()


def test_specific_and_all_policies(base):
    make_versions(base, 1, 2, 3)
    manager = manager_for(base, FakeLoader(), VersionPolicy("specific", versions=frozenset({1, 3})))
    manager.start()
    assert states(manager) == {1: "AVAILABLE", 3: "AVAILABLE"}
    manager.stop()
    manager = manager_for(base, FakeLoader(), VersionPolicy("all"))
    manager.start()
    assert states(manager) == {1: "AVAILABLE", 2: "AVAILABLE", 3: "AVAILABLE"}
    manager.stop()


def test_resolve_errors_use_tf_serving_wording(base):
    make_versions(base, 1)
    manager = manager_for(base, FakeLoader(), labels={"stable": 1, "canary": 5},
                          allow_unavailable_labels=True)  # fmt: skip
    manager.start()
    assert manager.resolve("m", label="stable").version == 1
    with pytest.raises(ServingError, match=r"^Servable not found for request: Latest\(x\)$"):
        manager.resolve("x")
    with pytest.raises(ServingError, match=r"^Servable not found for request: Specific\(m, 5\)$"):
        manager.resolve("m", label="canary")
    with pytest.raises(ServingError, match="Unrecognized servable version label: nope") as caught:
        manager.resolve("m", label="nope")
    assert caught.value.code == Code.INVALID_ARGUMENT
    with pytest.raises(ServingError, match=r"^Could not find any versions of model x$"):
        manager.version_states("x")
    with pytest.raises(ServingError, match=r"^Could not find version 4 of model m$"):
        manager.version_states("m", 4)
    manager.stop()


def test_labels_on_unavailable_versions(base):
    make_versions(base, 1)
    # Without the flag, TF Serving refuses labels at start-up (nothing is loaded yet).
    manager = manager_for(base, FakeLoader(), labels={"stable": 1})
    with pytest.raises(ServingError, match="not currently available") as caught:
        manager.start()
    assert caught.value.code == Code.FAILED_PRECONDITION
    manager = manager_for(base, FakeLoader(), labels={"stable": 1}, allow_unavailable_labels=True)
    manager.start()
    # Moving an existing label to a version that is not AVAILABLE is refused, even with the flag.
    moved = ModelConfig("m", str(base), VersionPolicy(), {"stable": 2})
    with pytest.raises(ServingError, match="version 2 of model m"):
        manager.apply_config([moved])
    assert manager.config("m").labels == {"stable": 1}
    make_versions(base, 2)
    manager.poll()
    manager.wait_for_pending()
    manager.apply_config([moved])
    assert manager.resolve("m", label="stable").version == 2
    manager.stop()


def test_removing_a_model_from_the_config_unloads_it(base, tmp_path):
    make_versions(base, 1)
    other = tmp_path / "o"
    make_versions(other, 4)
    manager = manager_for(base, FakeLoader())
    manager.start()
    manager.apply_config([ModelConfig("o", str(other))])
    manager.wait_for_pending()
    assert manager.model_names() == ["o"]
    assert states(manager, "o") == {4: "AVAILABLE"}
    assert states(manager, "m") == {1: "END"}
    with pytest.raises(ServingError, match="Latest"):
        manager.resolve("m")
    manager.stop()


def test_config_file_watcher_applies_changes_and_survives_bad_files(base, tmp_path):
    from serving.config import read_model_config_file
    from serving.manager import ConfigFileWatcher

    make_versions(base, 1, 2)
    path = tmp_path / "models.config"

    def write(labels: str) -> None:
        path.write_text(
            f'model_config_list {{ config {{ name: "m" base_path: "{base}" '
            f"model_version_policy {{ all {{}} }} {labels} }} }}"
        )

    write("")
    models = read_model_config_file(path)
    manager = ModelManager(models, poll_seconds=0, loader=FakeLoader())
    manager.start()
    watcher = ConfigFileWatcher(str(path), 1, manager, read_model_config_file)
    write('version_labels { key: "stable" value: 2 }')
    watcher.check()
    assert manager.resolve("m", label="stable").version == 2
    path.write_text("model_config_list { config { broken")
    watcher.check()  # logged, not applied
    write('version_labels { key: "stable" value: 9 }')
    watcher.check()  # refused: version 9 is not AVAILABLE
    assert manager.config("m").labels == {"stable": 2}
    # The file is the truth: a label moved by a reload request snaps back on the next poll.
    write('version_labels { key: "stable" value: 2 }')
    moved = ModelConfig("m", str(base), VersionPolicy("all"), {"stable": 1})
    manager.apply_config([moved])
    assert manager.resolve("m", label="stable").version == 1
    watcher.check()
    assert manager.resolve("m", label="stable").version == 2
    manager.stop()


def test_unloaded_versions_are_freed_despite_gc_freeze(base):
    """The manager freezes the collector after each load; an unloaded version's reference
    cycles (a loaded SavedModel is full of them) must still be freed."""

    class Graph:  # like TensorFlow's loaded objects: only a collection frees a cycle
        def __init__(self) -> None:
            self.cycle = self

    references: dict[int, weakref.ref] = {}

    def load(name: str, version: int, path: Path) -> FakeServable:
        servable = FakeServable(name, version)
        servable.graph = Graph()
        references[version] = weakref.ref(servable.graph)
        return servable

    make_versions(base, 1)
    manager = manager_for(base, load, collect_after_swap_seconds=0.2)
    try:
        manager.start()
        make_versions(base, 2)
        manager.poll()
        manager.wait_for_pending()
        assert states(manager) == {1: "END", 2: "AVAILABLE"}
        wait_until(lambda: references[1]() is None, "version 1 to be freed after its unload")
        in_flight = manager.resolve("m")  # a request still running on version 2
        make_versions(base, 3)
        manager.poll()
        manager.wait_for_pending()
        assert states(manager)[2] == "END"
        del in_flight  # the request finishes after the unload
        wait_until(lambda: references[2]() is None, "version 2 to be freed after its request")
    finally:
        manager.stop()
        gc.unfreeze()


def wait_until(condition, what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def record_collections(monkeypatch) -> list[float]:
    """Replace the (real, slow) collection with a list of the times it would have run."""
    collections: list[float] = []
    monkeypatch.setattr(
        ModelManager, "_collect_and_freeze", lambda self: collections.append(time.monotonic())
    )
    return collections


def test_the_unload_collection_waits_for_a_pause_in_requests(base, monkeypatch):
    """A full collection holds the GIL for 0.2-0.4 s with TensorFlow loaded: it must not land
    on the first requests to the new version, but must come within the maximum delay."""
    collections = record_collections(monkeypatch)
    make_versions(base, 1)
    manager = manager_for(
        base, FakeLoader(), collect_idle_seconds=0.5, collect_after_swap_seconds=0.8,
        collect_max_delay_seconds=3.0,
    )  # fmt: skip
    try:
        manager.start()
        assert manager.resolve("m").version == 1  # traffic before the new version arrives
        make_versions(base, 2)
        manager.poll()
        manager.wait_for_pending()
        unloaded_at = time.monotonic()
        busy_until = unloaded_at + 1.2
        while time.monotonic() < busy_until:  # steady traffic: a request every 50 ms
            assert manager.resolve("m").version == 2
            manager.poll()
            time.sleep(0.05)
        assert collections == [], "collected while requests kept arriving"
        wait_until(lambda: collections, "the idle collection")
        assert collections[0] - unloaded_at >= 1.2
    finally:
        manager.stop()


def test_no_collection_right_after_a_swap_even_when_idle(base, monkeypatch):
    """The first request to a new version comes as soon as it is AVAILABLE, often after a
    quiet spell: the collection must not be waiting to pounce on it."""
    collections = record_collections(monkeypatch)
    make_versions(base, 1)
    manager = manager_for(
        base, FakeLoader(), collect_idle_seconds=0.1, collect_after_swap_seconds=1.5,
        collect_max_delay_seconds=30,
    )  # fmt: skip
    try:
        manager.start()
        make_versions(base, 2)
        manager.poll()
        manager.wait_for_pending()
        swapped_at = time.monotonic()
        time.sleep(0.8)  # idle, but within the swap window
        assert collections == []
        wait_until(lambda: collections, "the collection after the swap window")
        assert collections[0] - swapped_at >= 1.4
    finally:
        manager.stop()


def test_under_constant_load_the_collection_comes_by_the_maximum_delay(base, monkeypatch):
    collections = record_collections(monkeypatch)
    make_versions(base, 1)
    manager = manager_for(base, FakeLoader(), collect_idle_seconds=10,
                          collect_max_delay_seconds=0.5)  # fmt: skip
    try:
        manager.start()
        make_versions(base, 2)
        manager.poll()
        manager.wait_for_pending()
        deadline = time.monotonic() + 5
        while not collections and time.monotonic() < deadline:
            manager.resolve("m")
            time.sleep(0.02)
        assert collections, "never collected under constant load"
    finally:
        manager.stop()


def test_requests_do_not_wait_for_a_slow_folder_listing(base, monkeypatch):
    import serving.manager

    make_versions(base, 1)
    manager = manager_for(base, FakeLoader())
    manager.start()
    listing, release = threading.Event(), threading.Event()
    real_list_versions = serving.manager.list_versions

    def slow_list_versions(path: str) -> dict[int, str]:  # a network file system taking its time
        listing.set()
        release.wait(10)
        return real_list_versions(path)

    monkeypatch.setattr(serving.manager, "list_versions", slow_list_versions)
    poller = threading.Thread(target=manager.poll)
    poller.start()
    try:
        assert listing.wait(5)
        resolved: list[int] = []
        resolver = threading.Thread(target=lambda: resolved.append(manager.resolve("m").version))
        resolver.start()
        resolver.join(2)
        assert resolved == [1], "resolve() waited for the poll's folder listing"
    finally:
        release.set()
        poller.join(10)
        manager.stop()
