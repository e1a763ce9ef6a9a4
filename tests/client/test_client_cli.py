"""The CLI commands against the fake server: outputs, exit codes, resume, shards."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from client_fixtures import (
    fake,
    fake_server_instance,
    free_port,
    make_bad_files,
    make_uniform_folder,
    transport_kind,
)
from typer.testing import CliRunner

from client.cli import app
from client.outputs import PredictionWriter, read_rows
from common.contract import IMAGES_INPUT, PROBABILITIES, SERVING_DEFAULT

__all__ = ["fake", "fake_server_instance", "transport_kind"]  # fixtures used by name

runner = CliRunner()
REPO_ROOT = Path(__file__).resolve().parents[2]


def run(*args: str):
    return runner.invoke(app, [str(arg) for arg in args], catch_exceptions=False)


def test_score_writes_one_row_per_file_in_sorted_order(fake, transport_kind, tmp_path):
    images = tmp_path / "images"
    expected = make_uniform_folder(images, list(range(0, 250, 10)))
    out = tmp_path / "preds.csv"
    result = run("score", images, "--out", out, "-s", fake.url(transport_kind), "-b", "4",
                 "--preprocess", "none")  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = read_rows(out)
    assert [row["path"] for row in rows] == sorted(expected)
    assert {row["path"]: row["class_id"] for row in rows} == expected
    assert all(row["model_version"] == 3 and row["error"] is None for row in rows)
    assert "scored 25 of 25 files" in result.stderr


def test_score_with_bad_files_exits_3_and_explains_each(fake, transport_kind, tmp_path):
    images = tmp_path / "images"
    make_uniform_folder(images, [5, 6])
    make_bad_files(images)
    out = tmp_path / "preds.jsonl"
    result = run("score", images, "--out", out, "-s", fake.url(transport_kind))
    assert result.exit_code == 3, result.output
    rows = {row["path"]: row for row in read_rows(out)}
    assert len(rows) == 6
    failed = {path for path, row in rows.items() if row["error"]}
    assert failed == {"bad_empty.png", "bad_truncated.png", "bad_text.png", "bad_huge.png"}
    assert "4 failed" in result.stderr


def test_resume_scores_only_what_is_missing(fake, tmp_path):
    images = tmp_path / "images"
    make_uniform_folder(images, list(range(30)))
    out = tmp_path / "preds.csv"
    assert run("score", images, "--out", out, "-s", fake.grpc_url).exit_code == 0
    complete = out.read_text()
    # Cut the file as a crash would: 12 rows kept, the 13th torn in the middle.
    lines = complete.splitlines(keepends=True)
    out.write_text("".join(lines[:13]) + lines[13][:9])
    fake.behaviour.batch_sizes.clear()

    again = run("score", images, "--out", out, "-s", fake.grpc_url)
    assert again.exit_code == 2 and "--resume" in again.stderr

    resumed = run("score", images, "--out", out, "-s", fake.grpc_url, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert sum(fake.behaviour.batch_sizes) == 18
    assert out.read_text() == complete
    assert "12 rows kept" in resumed.stderr


def test_interrupted_run_keeps_its_rows_and_resume_finishes_it(fake, tmp_path, monkeypatch):
    images = tmp_path / "images"
    make_uniform_folder(images, list(range(40)))
    out = tmp_path / "preds.jsonl"
    original_write = PredictionWriter.write
    written = []

    def write_then_interrupt(self, result):
        if len(written) == 25:
            raise KeyboardInterrupt
        original_write(self, result)
        written.append(result.path)

    monkeypatch.setattr(PredictionWriter, "write", write_then_interrupt)
    result = run("score", images, "--out", out, "-s", fake.rest_url, "-b", "8")
    assert result.exit_code == 130
    assert "--resume" in result.stderr
    assert [row["path"] for row in read_rows(out)] == written

    monkeypatch.setattr(PredictionWriter, "write", original_write)
    # In this process the interrupted run's senders outlive it (a real Ctrl-C ends the process
    # with them): a batch they had begun may still reach the server. Count from when they end.
    deadline = time.monotonic() + 30
    while any(thread.name.startswith("predict") for thread in threading.enumerate()):
        assert time.monotonic() < deadline, "the interrupted run's senders are still running"
        time.sleep(0.05)
    fake.behaviour.batch_sizes.clear()
    assert run("score", images, "--out", out, "-s", fake.rest_url, "--resume").exit_code == 0
    assert sum(fake.behaviour.batch_sizes) == 15
    paths = [row["path"] for row in read_rows(out)]
    assert paths == sorted(paths) and len(set(paths)) == 40


@pytest.mark.slow
def test_resume_after_a_hard_kill_loses_and_repeats_no_row(fake, tmp_path):
    images = tmp_path / "images"
    expected = make_uniform_folder(images, [value % 256 for value in range(120)])
    out = tmp_path / "preds.csv"
    command = [sys.executable, "-m", "client", "score", str(images), "--out", str(out),
               "-s", fake.grpc_url, "-b", "4", "-c", "1", "--preprocess", "none"]  # fmt: skip
    fake.behaviour.delay_seconds = 0.05  # 30 batches: about 1.5 s of scoring
    process = subprocess.Popen(command, cwd=REPO_ROOT, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not (out.exists() and out.read_text().count("\n") > 30):  # header + 30 rows
            assert process.poll() is None and time.monotonic() < deadline, "no rows written"
            time.sleep(0.02)
        process.kill()  # SIGKILL: no cleanup, no final flush
    finally:
        process.wait()
    kept = len(read_rows(out))
    assert 30 <= kept < 120
    fake.behaviour.delay_seconds = 0.0
    time.sleep(0.5)  # the killed run's last request may still be in the server
    fake.behaviour.batch_sizes.clear()

    resumed = run("score", images, "--out", out, "-s", fake.grpc_url, "--resume",
                  "--preprocess", "none")  # fmt: skip
    assert resumed.exit_code == 0, resumed.output
    assert sum(fake.behaviour.batch_sizes) == 120 - kept  # nothing scored twice
    rows = read_rows(out)
    assert [row["path"] for row in rows] == sorted(expected)  # every file once, in order
    assert {row["path"]: row["class_id"] for row in rows} == expected


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # it ended meanwhile
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _running(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
def test_decoding_processes_end_when_the_scoring_process_is_killed(fake, tmp_path):
    """SIGKILL (or the OOM killer) gives the parent no chance to stop its worker processes;
    they saw it go on their own (before, they waited for their next batch forever, and kept
    their forkserver alive with them)."""
    images = tmp_path / "images"
    make_uniform_folder(images, [value % 256 for value in range(200)])
    command = [sys.executable, "-m", "client", "score", str(images), "--out",
               str(tmp_path / "preds.csv"), "-s", fake.grpc_url, "-b", "2", "-c", "1",
               "--preprocess", "none", "--decode-processes", "2"]  # fmt: skip
    fake.behaviour.delay_seconds = 0.05  # 100 batches: about 5 s of scoring
    process = subprocess.Popen(command, cwd=REPO_ROOT, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:  # the forkserver (a child) and its workers (its children)
            descendants = [(child, _children(child)) for child in _children(process.pid)]
            workers = [pid for _, grandchildren in descendants for pid in grandchildren]
            if workers:
                break
            assert process.poll() is None and time.monotonic() < deadline, "no worker started"
            time.sleep(0.05)
        process.kill()
    finally:
        process.wait()
    left = workers + [child for child, _ in descendants]
    deadline = time.monotonic() + 15
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = [pid for pid in left if _running(pid)]
    assert not left, f"processes of the killed run still running: {left}"


def test_shards_cover_every_file_once(fake, tmp_path):
    images = tmp_path / "images"
    expected = make_uniform_folder(images, list(range(50)))
    seen = []
    for index in range(3):
        out = tmp_path / f"shard{index}.csv"
        result = run("score", images, "--out", out, "-s", fake.grpc_url, "--shard", f"{index}/3")
        assert result.exit_code == 0, result.output
        rows = read_rows(out)
        assert 0 < len(rows) < 50
        seen += [row["path"] for row in rows]
    assert sorted(seen) == sorted(expected)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--shard", "3/3"], "--shard must be i/N"),
        (["--server", "localhost:8500"], "has no scheme"),
        (["--version", "2", "--label", "stable"], "not both"),
        (["--resume", "--overwrite"], "contradict"),
    ],
)
def test_usage_errors_exit_2_with_one_line(tmp_path, args, message):
    (tmp_path / "images").mkdir()
    result = run("score", tmp_path / "images", "--out", tmp_path / "p.csv", *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_out_must_be_csv_or_jsonl(tmp_path):
    result = run("score", tmp_path, "--out", tmp_path / "p.txt")
    assert result.exit_code == 2 and "*.csv or *.jsonl" in result.stderr


def test_unreachable_server_exits_1(tmp_path):
    make_uniform_folder(tmp_path / "images", [1])
    server = f"http://127.0.0.1:{free_port()}"
    result = run("score", tmp_path / "images", "--out", tmp_path / "p.csv", "-s", server,
                 "--retries", "1")  # fmt: skip
    assert result.exit_code == 1
    assert result.stderr.startswith("error: UNAVAILABLE: cannot reach")
    assert not (tmp_path / "p.csv").exists()  # a failed start leaves nothing to --resume


def test_unknown_model_exits_1(fake, transport_kind):
    result = run("status", "-s", fake.url(transport_kind), "--model", "nosuchmodel")
    assert result.exit_code == 1 and "NOT_FOUND" in result.stderr


def test_status_and_metadata(fake, transport_kind):
    status = run("status", "-s", fake.url(transport_kind), "--json")
    assert status.exit_code == 0
    assert json.loads(status.stdout)["versions"][0] == {
        "version": 3, "state": "AVAILABLE", "error_code": "OK", "error_message": "",
    }  # fmt: skip
    assert "AVAILABLE" in run("status", "-s", fake.url(transport_kind)).stdout
    metadata = run("metadata", "-s", fake.url(transport_kind), "--json")
    signature = json.loads(metadata.stdout)["signatures"][SERVING_DEFAULT]
    assert signature["inputs"][IMAGES_INPUT]["shape"] == [-1, 28, 28, 1]
    table = run("metadata", "-s", fake.url(transport_kind)).stdout
    assert IMAGES_INPUT in table and "[?, 28, 28, 1]" in table and PROBABILITIES in table


def test_wait_returns_once_available(fake, transport_kind):
    result = run("wait", "-s", fake.url(transport_kind), "--timeout", "5")
    assert result.exit_code == 0 and "AVAILABLE (version 3)" in result.stdout


def test_wait_times_out_with_the_last_error(transport_kind):
    scheme = "grpc" if transport_kind == "grpc" else "http"
    server = f"{scheme}://127.0.0.1:{free_port()}"
    result = run("wait", "-s", server, "--timeout", "0.6", "--interval", "0.2")
    assert result.exit_code == 1
    assert "not AVAILABLE" in result.stderr and "UNAVAILABLE" in result.stderr


def test_predict_prints_a_table_and_json(fake, transport_kind, tmp_path):
    expected = make_uniform_folder(tmp_path, [12, 47])
    files = [tmp_path / name for name in expected]
    table = run("predict", *files, "-s", fake.url(transport_kind), "--preprocess", "none")
    assert table.exit_code == 0, table.output
    assert "digit-2" in table.stdout and "digit-7" in table.stdout
    as_json = run("predict", *files, "-s", fake.url(transport_kind), "--json", "--top-k", "1")
    rows = json.loads(as_json.stdout)
    assert [row["class_id"] for row in rows] == [2, 7]
    assert all(len(row["top_k"]) == 1 for row in rows)


def test_predict_shows_names_with_brackets_as_they_are(fake, tmp_path, monkeypatch):
    # rich would read "[a]" as a style (and drop it) and fail on "[/...]": names are text.
    monkeypatch.chdir(tmp_path)  # short relative names: the table does not wrap them
    good = make_uniform_folder(tmp_path, [12])
    (tmp_path / next(iter(good))).rename(tmp_path / "scan[a].png")
    (tmp_path / "x[").mkdir()
    (tmp_path / "x[" / "y].png").write_bytes(b"")  # its path holds "[/y]", a closing tag
    result = run("predict", "scan[a].png", "x[/y].png", "-s", fake.grpc_url)
    assert result.exit_code == 3, result.output
    assert "scan[a].png" in result.stdout and "x[/y].png" in result.stdout


def test_predict_with_a_bad_file_exits_3(fake, tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    result = run("predict", tmp_path / "empty.png", "-s", fake.grpc_url)
    assert result.exit_code == 3 and "error" in result.stdout


def test_the_predictions_file_inside_the_folder_is_not_scored(fake, tmp_path):
    expected = make_uniform_folder(tmp_path, [1, 2, 3])
    out = tmp_path / "preds.jsonl"
    for extra in ([], ["--resume"]):
        result = run("score", tmp_path, "--out", out, "-s", fake.grpc_url, *extra)
        assert result.exit_code == 0, result.output
    assert sorted(row["path"] for row in read_rows(out)) == sorted(expected)
