"""The real trainer (`python -m trainer train`) SIGKILLed in the middle of its export (issue 12):
the model repository never shows an incomplete integer-named version, the rollout state file is
absent or whole, and the next run cleans up and publishes version 1 complete.

`tests/trainer/test_publish_kill.py` kills `publish()` at 20 moments with a slow copying writer;
this kills the trainer itself, with Keras' own SavedModel writer, TensorFlow's threads and the
gate, while the export is under way."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from reliability_support import stopped_at_exit

from trainer.export import check_complete
from trainer.publish import STAGING_PREFIX, versions

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]


def trainer_command(mnist_dir: Path, repo: Path, run_dir: Path) -> list[str]:
    return [
        sys.executable, "-m", "trainer", "train", "--dataset", "mnist",
        "--data-dir", str(mnist_dir), "--model", "mlp", "--epochs", "1", "--limit", "1500",
        "--seed", "7", "--model-repo", str(repo), "--model-name", "mnist",
        "--run-dir", str(run_dir),
    ]  # fmt: skip


def staging_folders(base: Path) -> list[Path]:
    if not base.is_dir():
        return []
    return [path for path in base.iterdir() if path.name.startswith(STAGING_PREFIX)]


def test_trainer_killed_mid_export_leaves_no_version_and_the_next_run_publishes(
    mnist_dir: Path, tmp_path: Path, figures
) -> None:
    repo, base = tmp_path / "models", tmp_path / "models" / "mnist"
    log_path = tmp_path / "killed.log"
    with open(log_path, "w") as log, stopped_at_exit() as started:
        process = subprocess.Popen(
            trainer_command(mnist_dir, repo, tmp_path / "run-killed"),
            cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        started.append(process)
        deadline = time.monotonic() + 300
        # The export writes into a hidden staging folder: kill once saved_model.pb is there (a
        # folder TF Serving could load) but before the warmup records and model_info.json.
        # Until the folder exists (start-up and training) a slow poll, so as not to take CPU
        # from the trainer; then a fast one, to land between the files.
        while not (folders := staging_folders(base)):
            assert process.poll() is None, f"trainer ended early:\n{log_path.read_text()}"
            assert time.monotonic() < deadline, "the trainer never started its export"
            time.sleep(0.05)
        while not any((folder / "saved_model.pb").exists() for folder in folders):
            assert process.poll() is None, f"trainer ended early:\n{log_path.read_text()}"
            assert time.monotonic() < deadline, "the trainer never finished saved_model.pb"
            time.sleep(0.002)
            folders = staging_folders(base)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    left = staging_folders(base)
    written = [p for p in left[0].rglob("*") if p.is_file()] if left else []
    assert versions(base) == [], "a killed export became a version"
    assert left, "the kill landed after the rename: nothing was interrupted"
    config = repo / "models.config"
    if config.exists():  # written by temp file + rename: whole or absent
        text = config.read_text()
        assert "model_config_list" in text and text.rstrip().endswith("}")

    result = subprocess.run(
        trainer_command(mnist_dir, repo, tmp_path / "run-next"),
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert versions(base) == [1]
    check_complete(base / "1")
    assert staging_folders(base) == [], "the next run left the killed run's staging folder"
    figures(
        killed_with_files=len(written), versions_after_kill=0, published_after=1,
        staging_left=0,
    )  # fmt: skip
