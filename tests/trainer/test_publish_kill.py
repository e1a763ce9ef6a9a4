"""SIGKILL a publisher at many moments: an integer-named version is complete or absent."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trainer.publish import STAGING_PREFIX, versions

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("publish_worker.py")
DELAY = 0.01
KILLS = 20


def tree(folder: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in folder.rglob("*")
        if path.is_file()
    }


def start(base: Path, source: Path) -> subprocess.Popen:
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(
        [sys.executable, str(WORKER), str(base), str(source), str(DELAY)],
        stdout=subprocess.PIPE, text=True, env=environment,
    )  # fmt: skip
    assert process.stdout.readline().strip() == "writing"
    return process


@pytest.mark.slow
def test_killed_publishers_never_leave_an_incomplete_version(published_model, tmp_path) -> None:
    source = published_model.version_dir(1)
    expected = tree(source)
    required = {"saved_model.pb", "variables/variables.index", "assets.extra/model_info.json",
                "assets.extra/tf_serving_warmup_requests"}  # fmt: skip
    assert required <= set(expected)
    base = tmp_path / "models" / "mnist"

    process = start(base, source)
    started = time.monotonic()  # after start-up: kills are timed from the same moment
    assert process.communicate(timeout=60)[0].strip() == "published 1"
    duration = time.monotonic() - started
    assert tree(base / "1") == expected

    moments = random.Random(0)
    killed_while_staging = 0
    for attempt in range(KILLS):
        process = start(base, source)
        # Spread kills over the whole write, the fsync and the rename (last ~10%).
        time.sleep(duration * (attempt + moments.random()) / KILLS)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        # Each run first removes the staging folders of earlier killed runs, so at most one.
        staged = [path for path in base.iterdir() if path.name.startswith(STAGING_PREFIX)]
        killed_while_staging += len(staged)
        published = versions(base)
        assert published == list(range(1, len(published) + 1))
        for version in published:
            assert tree(base / str(version)) == expected, f"version {version} is incomplete"
    # Timing on a busy machine is loose, but most kills must land while writing.
    assert killed_while_staging >= KILLS // 3, "too few kills landed while writing"

    # The next publish removes what the killed ones left behind and takes the next number.
    count = len(versions(base))
    process = start(base, source)
    assert process.communicate(timeout=60)[0].strip() == f"published {count + 1}"
    assert sorted(path.name for path in base.iterdir()) == sorted(
        str(version) for version in range(1, count + 2)
    )
