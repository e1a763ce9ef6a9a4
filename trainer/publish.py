"""Atomic, versioned publishing into a TF Serving model repository (`<repo>/<name>/<version>/`).

TF Serving loads every folder whose name is an integer. A version is therefore written under a
hidden, non-integer staging name in the same folder (so on the same file system), flushed to
disk, and only then renamed to its number: a rename within one file system is atomic, so a
reader sees either no version or a complete one, whatever moment the writer dies at.

The repository's rollout state (`<repo>/models.config`, common.rollout_state) is the other
thing publishing touches: the first version of a model starts it (both labels and the pin on
that version, so a server started on the file serves it at once), and pruning never deletes a
version that a label points at or the file pins.

Pure Python, no TensorFlow: the caller passes a function that writes the files.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from common import rollout_state

STAGING_PREFIX = ".staging-"
DELETING_PREFIX = ".deleting-"
# Staging folders from another host cannot be checked for a live owner; after this long they
# are assumed abandoned.
FOREIGN_STAGING_MAX_AGE_SECONDS = 24 * 3600
VERSION_PATTERN = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class Published:
    version: int
    path: Path
    pruned: tuple[int, ...]
    cleaned: tuple[str, ...]
    # Set when this publish started the repository's rollout state (models.config).
    rollout_started: bool = False
    # What the caller should tell the user: the rollout state could not be started, or pruning
    # kept versions it would otherwise have deleted (labelled, pinned, unreadable state).
    note: str | None = None


def versions(base: Path) -> list[int]:
    """The positive integer versions under `base`, ascending (what TF Serving would load)."""
    return sorted(version_folders(base))


def version_folders(base: Path) -> dict[int, Path]:
    """Each positive integer version under `base` and its folder (`00000123` is version 123)."""
    if not base.is_dir():
        return {}
    found: dict[int, Path] = {}
    for child in sorted(base.iterdir()):
        if VERSION_PATTERN.fullmatch(child.name) and child.is_dir() and int(child.name) > 0:
            found.setdefault(int(child.name), child)
    return found


def _host() -> str:
    """Where a pid means this process table: the host name plus the pid namespace.

    Containers sharing the host's network (and so its host name) have their own pid numbers;
    without the namespace, one of them could take another's live staging folder for stale.
    """
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = 0
    host = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "unknown"
    return f"{host}.{namespace}" if namespace else host


def _staging_name() -> str:
    return f"{STAGING_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-{_host()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_stale(folder: Path, now: float) -> bool:
    if folder.name.startswith(DELETING_PREFIX):
        return True
    parts = folder.name[len(STAGING_PREFIX) :].split("-", 2)
    if len(parts) == 3 and parts[0].isdigit() and parts[2] == _host():
        return int(parts[0]) != os.getpid() and not _pid_alive(int(parts[0]))
    try:
        age = now - folder.stat().st_mtime
    except FileNotFoundError:
        return False
    return age > FOREIGN_STAGING_MAX_AGE_SECONDS


def clean_stale(base: Path) -> list[str]:
    """Remove staging folders left by publishers that died; never touches integer folders."""
    if not base.is_dir():
        return []
    removed = []
    now = time.time()
    for child in sorted(base.iterdir()):
        if not child.name.startswith((STAGING_PREFIX, DELETING_PREFIX)) or not child.is_dir():
            continue
        if _is_stale(child, now):
            shutil.rmtree(child, ignore_errors=True)
            removed.append(child.name)
    return removed


def fsync_tree(root: Path) -> None:
    """Flush every file and folder under `root` (and `root` itself) to disk."""
    for directory, _, files in os.walk(root):
        for name in files:
            descriptor = os.open(os.path.join(directory, name), os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        _fsync_dir(Path(directory))


def _fsync_dir(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def publish(
    base: Path,
    write: Callable[[Path], None],
    keep: int | None = None,
    validate: Callable[[Path], None] | None = None,
) -> Published:
    """Write a new version under `base` (`<repo>/<name>`) and return its number.

    `write(folder)` fills a fresh staging folder; `validate(folder)` may raise to abort before
    anything becomes visible. The next version is one more than the highest existing one; when
    another publisher takes that number first, the rename fails and the next one is tried.
    The first version of a model starts `<repo>/models.config` (labels and pin on it; the base
    path is the model folder's absolute path as this process sees it, which is where the
    servers must see it too). After success, `keep` prunes all but the newest `keep` versions;
    the new one and every version the rollout state labels or pins are always kept.
    """
    if keep is not None and keep < 1:
        raise ValueError(f"keep must be at least 1 (the new version is never pruned), got {keep}")
    base.mkdir(parents=True, exist_ok=True)
    cleaned = clean_stale(base)
    staging = base / _staging_name()
    staging.mkdir()
    try:
        write(staging)
        if validate is not None:
            validate(staging)
        fsync_tree(staging)
        version = _rename_to_next_version(base, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    started, notes = False, []
    if version == min(versions(base)):
        try:
            started = rollout_state.first_version(
                base.parent, base.name, version, str(base.resolve())
            )
        except (OSError, rollout_state.StateError) as error:
            # The version is published; only the labels are missing ('rollout init' adds them).
            notes.append(f"rollout state not started: {error}")
    pruned = []
    if keep is not None:
        try:
            held = rollout_state.protected_versions(base.parent, base.name)
        except rollout_state.StateError as error:
            notes.append(f"nothing pruned: {error}")
        else:
            kept = sorted(held & set(versions(base)[:-keep]))
            pruned = prune(base, keep, protect={version, *held})
            if kept:
                shown = ", ".join(map(str, kept))
                notes.append(
                    f"kept versions {shown}: labelled or pinned in {rollout_state.CONFIG_FILE}"
                )
    note = "; ".join(notes) or None
    return Published(version, base / str(version), tuple(pruned), tuple(cleaned), started, note)


def _rename_to_next_version(base: Path, staging: Path) -> int:
    version = (max(versions(base), default=0)) + 1
    while True:
        target = base / str(version)
        if not target.exists():
            try:
                os.rename(staging, target)
            except OSError as error:
                # Another publisher created the same number between our check and rename.
                if error.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
            else:
                _fsync_dir(base)
                return version
        version += 1


def prune(base: Path, keep: int, protect: int | set[int] | None = None) -> list[int]:
    """Delete all but the newest `keep` versions, never those in `protect`; return the deleted
    numbers.

    `protect` holds the caller's own new version (a concurrent publisher may have renamed a
    newer one into place meanwhile, which must not make this publish delete what it just wrote)
    and the versions the rollout state labels or pins.
    Each old version is first renamed to a hidden name (atomic, so TF Serving sees it vanish in
    one step) and only then deleted file by file.
    """
    if keep < 1:
        raise ValueError(f"keep must be at least 1, got {keep}")
    existing = versions(base)
    if protect is None:
        protect = set()
    elif isinstance(protect, int):
        protect = {protect}
    doomed = [version for version in existing[:-keep] if version not in protect]
    for version in doomed:
        hidden = base / f"{DELETING_PREFIX}{version}-{secrets.token_hex(4)}"
        try:
            os.rename(base / str(version), hidden)
        except FileNotFoundError:
            continue  # someone else pruned it already
        shutil.rmtree(hidden, ignore_errors=True)
    if doomed:
        _fsync_dir(base)
    return doomed
