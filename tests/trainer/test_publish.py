"""Atomic publishing, version numbering, stale staging clean-up and pruning (no TensorFlow)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

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


def test_stale_staging_is_cleaned_but_live_and_integer_folders_are_not(tmp_path: Path) -> None:
    base = tmp_path / "mnist"
    base.mkdir()
    host = publish._host()
    dead_pid = 2**22 + 12345  # above Linux's default pid_max, so never a live process
    stale = base / f"{publish.STAGING_PREFIX}{dead_pid}-deadbeef-{host}"
    live = base / f"{publish.STAGING_PREFIX}{os.getppid()}-cafecafe-{host}"
    foreign_old = base / f"{publish.STAGING_PREFIX}1-00000000-elsewhere"
    foreign_new = base / f"{publish.STAGING_PREFIX}1-11111111-elsewhere"
    leftover_delete = base / f"{publish.DELETING_PREFIX}4-abcd"
    for folder in (stale, live, foreign_old, foreign_new, leftover_delete, base / "5"):
        folder.mkdir()
    old = time.time() - publish.FOREIGN_STAGING_MAX_AGE_SECONDS - 60
    os.utime(foreign_old, (old, old))
    result = publish.publish(base, write_version)
    assert sorted(result.cleaned) == sorted([stale.name, foreign_old.name, leftover_delete.name])
    assert live.exists() and foreign_new.exists() and (base / "5").exists()
    assert result.version == 6


def test_keep_prunes_old_versions_never_the_newest(tmp_path: Path) -> None:
    base = tmp_path / "mnist"
    for _ in range(4):
        publish.publish(base, write_version)
    result = publish.publish(base, write_version, keep=2)
    assert result.pruned == (1, 2, 3)
    assert publish.versions(base) == [4, 5]
    assert publish.publish(base, write_version, keep=1).pruned == (4, 5)
    assert publish.versions(base) == [6]
    assert [path.name for path in base.iterdir()] == ["6"]


def test_keep_below_one_is_rejected_before_writing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        publish.publish(tmp_path / "mnist", write_version, keep=0)
    assert not (tmp_path / "mnist").exists()
    with pytest.raises(ValueError, match="at least 1"):
        publish.prune(tmp_path, 0)
