"""Atomic publishing, version numbering, stale staging clean-up, pruning and the rollout state a
first publish starts (no TensorFlow)."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from common import rollout_state
from trainer import publish


def write_version(folder: Path, marker: str = "x") -> None:
    (folder / "variables").mkdir()
    (folder / "variables" / "variables.index").write_text(marker)
    (folder / "saved_model.pb").write_text(marker)


def test_versions_counts_only_positive_integer_folders(tmp_path: Path) -> None:
    for name in ("1", "3", "0", "10", ".staging-1-ab-host", "latest", "7a"):
        (tmp_path / name).mkdir()
    (tmp_path / "4").write_text("a file, not a version")
    assert publish.versions(tmp_path) == [1, 3, 10]
    assert publish.versions(tmp_path / "absent") == []


def test_publish_takes_the_next_number_and_leaves_no_staging(tmp_path: Path) -> None:
    base = tmp_path / "models" / "mnist"
    first = publish.publish(base, write_version)
    second = publish.publish(base, lambda folder: write_version(folder, "second"))
    assert (first.version, second.version) == (1, 2)
    assert (base / "2" / "saved_model.pb").read_text() == "second"
    assert sorted(path.name for path in base.iterdir()) == ["1", "2"]


def test_failed_write_or_validation_publishes_nothing(tmp_path: Path) -> None:
    base = tmp_path / "mnist"

    def broken(folder: Path) -> None:
        write_version(folder)
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        publish.publish(base, broken)

    def reject(folder: Path) -> None:
        raise RuntimeError("export incomplete")

    with pytest.raises(RuntimeError, match="export incomplete"):
        publish.publish(base, write_version, validate=reject)
    assert list(base.iterdir()) == []


def test_a_number_taken_meanwhile_is_skipped(tmp_path: Path) -> None:
    base = tmp_path / "mnist"
    publish.publish(base, write_version)

    def racing(folder: Path) -> None:
        write_version(folder)
        # Another publisher finishes version 2 while this one is still writing.
        (base / "2").mkdir()
        (base / "2" / "saved_model.pb").write_text("theirs")

    assert publish.publish(base, racing).version == 3
    assert (base / "2" / "saved_model.pb").read_text() == "theirs"


def test_concurrent_publishers_each_get_their_own_version(tmp_path: Path) -> None:
    base = tmp_path / "mnist"
    count = 8
    # Everyone finishes writing before anyone renames, so all start from the same next number.
    barrier = threading.Barrier(count)

    def publisher(index: int) -> int:
        def write(folder: Path) -> None:
            write_version(folder, f"publisher {index}")
            barrier.wait(timeout=30)

        return publish.publish(base, write, keep=count).version

    with ThreadPoolExecutor(count) as pool:
        numbers = list(pool.map(publisher, range(count)))
    assert sorted(numbers) == list(range(1, count + 1))
    for index, version in enumerate(numbers):
        assert (base / str(version) / "saved_model.pb").read_text() == f"publisher {index}"
    assert sorted(path.name for path in base.iterdir()) == sorted(map(str, numbers))


def test_stale_staging_is_cleaned_but_live_and_integer_folders_are_not(tmp_path: Path) -> None:
    base = tmp_path / "mnist"
    base.mkdir()
    host = publish._host()
    dead_pid = 2**22 + 12345  # above Linux's default pid_max, so never a live process
    stale = base / f"{publish.STAGING_PREFIX}{dead_pid}-deadbeef-{host}"
    live = base / f"{publish.STAGING_PREFIX}{os.getppid()}-cafecafe-{host}"
    foreign_old = base / f"{publish.STAGING_PREFIX}1-00000000-elsewhere"
    foreign_new = base / f"{publish.STAGING_PREFIX}1-11111111-elsewhere"
    # Same host name, another pid namespace (a container on the host's network): its pid
    # means nothing here, so only age can make it stale.
    namespace = os.stat("/proc/self/ns/pid").st_ino
    assert host.endswith(f".{namespace}")
    other_host = f"{host.removesuffix(str(namespace))}{namespace + 1}"
    other_namespace = base / f"{publish.STAGING_PREFIX}{dead_pid}-22222222-{other_host}"
    leftover_delete = base / f"{publish.DELETING_PREFIX}4-abcd"
    folders = (stale, live, foreign_old, foreign_new, other_namespace, leftover_delete, base / "5")
    for folder in folders:
        folder.mkdir()
    old = time.time() - publish.FOREIGN_STAGING_MAX_AGE_SECONDS - 60
    os.utime(foreign_old, (old, old))
    result = publish.publish(base, write_version)
    assert sorted(result.cleaned) == sorted([stale.name, foreign_old.name, leftover_delete.name])
    assert live.exists() and foreign_new.exists() and (base / "5").exists()
    assert other_namespace.exists()
    assert result.version == 6


def without_rollout_state(base: Path) -> None:
    rollout_state.config_path(base.parent).unlink()


def test_keep_prunes_old_versions_never_the_newest(tmp_path: Path) -> None:
    base = tmp_path / "mnist"
    for _ in range(4):
        publish.publish(base, write_version)
    without_rollout_state(base)
    result = publish.publish(base, write_version, keep=2)
    assert result.pruned == (1, 2, 3)
    assert publish.versions(base) == [4, 5]
    assert publish.publish(base, write_version, keep=1).pruned == (4, 5)
    assert publish.versions(base) == [6]
    assert [path.name for path in base.iterdir()] == ["6"]


def test_the_first_publish_starts_the_rollout_state_on_its_version(tmp_path: Path) -> None:
    base = tmp_path / "mnist"
    first = publish.publish(base, write_version)
    assert first.rollout_started and first.note is None
    state = rollout_state.read(tmp_path)
    (entry,) = state.models
    assert (entry.name, entry.base_path) == ("mnist", str(base.resolve()))
    assert entry.policy == "specific" and entry.pins == (1,)
    assert entry.labels == {"stable": 1, "canary": 1}
    assert [(h.label, h.old, h.new, h.step) for h in state.history] == [
        ("stable", None, 1, "publish"),
        ("canary", None, 1, "publish"),
    ]
    # Later versions leave the state alone: nothing loads until a rollout step pins them.
    text = rollout_state.config_path(tmp_path).read_text()
    assert not publish.publish(base, write_version).rollout_started
    assert rollout_state.config_path(tmp_path).read_text() == text
    # A second model in the same repository is added beside the first.
    assert publish.publish(tmp_path / "digits", write_version).rollout_started
    assert [m.name for m in rollout_state.read(tmp_path).models] == ["mnist", "digits"]


def test_keep_never_prunes_a_labelled_or_pinned_version(tmp_path: Path) -> None:
    base = tmp_path / "mnist"
    for _ in range(5):
        publish.publish(base, write_version)
    state = rollout_state.read(tmp_path)
    entry = state.models[0]
    # stable on 1, canary on 3, 2 pinned (a rollback target): all three survive --keep=1.
    pinned = rollout_state.ModelEntry(
        entry.name, entry.base_path, pins=(1, 2, 3), labels={"stable": 1, "canary": 3}
    )
    rollout_state.save(tmp_path, state.with_model(pinned))
    result = publish.publish(base, write_version, keep=1)
    assert result.version == 6 and result.pruned == (4, 5)
    assert publish.versions(base) == [1, 2, 3, 6]
    assert result.note == "kept versions 1, 2, 3: labelled or pinned in models.config"


def test_an_unreadable_rollout_state_prunes_nothing_and_says_why(tmp_path: Path) -> None:
    base = tmp_path / "mnist"
    for _ in range(3):
        publish.publish(base, write_version)
    rollout_state.config_path(tmp_path).write_text("model_config_list { config { nme: 1 } }\n")
    result = publish.publish(base, write_version, keep=1)
    assert result.pruned == () and publish.versions(base) == [1, 2, 3, 4]
    assert result.note.startswith("nothing pruned: ") and "nme" in result.note


def test_keep_never_prunes_its_own_version_when_a_racer_publishes_a_newer_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = tmp_path / "mnist"
    publish.publish(base, write_version)
    without_rollout_state(base)
    rename = publish._rename_to_next_version

    def rename_then_racer_publishes(base: Path, staging: Path) -> int:
        version = rename(base, staging)
        # Another publisher renames version + 1 into place before this one prunes.
        racer = base / str(version + 1)
        racer.mkdir()
        write_version(racer, "racer")
        return version

    monkeypatch.setattr(publish, "_rename_to_next_version", rename_then_racer_publishes)
    result = publish.publish(base, write_version, keep=1)
    assert result.version == 2
    assert result.pruned == (1,)
    assert publish.versions(base) == [2, 3]
    assert (result.path / "saved_model.pb").is_file()


def test_keep_below_one_is_rejected_before_writing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        publish.publish(tmp_path / "mnist", write_version, keep=0)
    assert not (tmp_path / "mnist").exists()
    with pytest.raises(ValueError, match="at least 1"):
        publish.prune(tmp_path, 0)
