"""SIGKILL for real, on loopback: the server mid-score, the client at random points, and a server
that stays down RELIABILITY_OUTAGE_SECONDS (default 15) before it comes back on the same ports.

Each test scores `many_digits` (6,000 files) and compares the final predictions file with an
uninterrupted run of them: every file scored once, in order, with the same prediction.
"""

from __future__ import annotations

import random
import subprocess
import time

import pytest
from harness import REPO_ROOT, wait_until_available
from reliability_support import (
    MODEL,
    Ports,
    client_command,
    compare_predictions,
    complete_lines,
    env_seconds,
    run_client,
    sigkill,
    start_available,
    start_server,
    stopped_at_exit,
    wait_for_lines,
)

from client.outputs import FLUSH_SECONDS, read_rows

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

OUTAGE_SECONDS = env_seconds("RELIABILITY_OUTAGE_SECONDS", 15)
CLIENT_KILLS = 6  # the first one during start-up, the others while rows are being written


def server_flags(published_model) -> tuple[str, ...]:
    return (f"--model_name={MODEL}", f"--model_base_path={published_model.base_path}")


def start_client(*args: object) -> subprocess.Popen:
    return subprocess.Popen(
        client_command(*args), cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def assert_complete(result: dict[str, object], total: int) -> None:
    assert result["rows"] == total, result
    assert result["lost"] == result["extra"] == result["duplicated"] == 0, result
    assert result["differing"] == 0 and result["in_order"], result


def test_server_killed_mid_score_then_resume_gives_the_same_file(
    published_model, many_digits, tmp_path, figures
):
    """The server is SIGKILLed while `score` runs (REST); the run ends with error rows (exit 3);
    `--resume` against a new server keeps the scored rows and scores only the failed ones."""
    folder, total, reference = many_digits
    ports, out = Ports(), tmp_path / "preds.csv"
    flags = server_flags(published_model)
    server = start_available(ports, *flags, log_path=tmp_path / "server.log")
    with stopped_at_exit(server.process) as processes:
        # No waiting out the outage here: this run is meant to end with error rows.
        client = start_client(
            "score", folder, "--out", out, "-s", ports.rest_url, "-b", 25, "-c", 1,
            "--retries", 0, "--retry-seconds", 0,
        )  # fmt: skip
        processes.append(client)
        wait_for_lines(out, 1 + 50, client, timeout=120)
        sigkill(server.process)
        stderr = client.communicate(timeout=180)[1]
        assert client.returncode == 3, stderr  # some files failed
        rows = read_rows(out)
        failed = sum(1 for row in rows if row["error"])
        assert len(rows) == total and 0 < failed < total, stderr
        assert all("UNAVAILABLE" in row["error"] or "reach" in row["error"] for row in rows
                   if row["error"]), {row["error"] for row in rows if row["error"]}  # fmt: skip

        server = start_available(ports, *flags, log_path=tmp_path / "server.log")
        processes.append(server.process)
        resumed = run_client("score", folder, "--out", out, "-s", ports.rest_url, "--resume")
        assert resumed.returncode == 0, resumed.stderr
        assert f"{total - failed} rows kept, {failed} failed rows to retry" in resumed.stderr
    result = compare_predictions(out, reference)
    assert_complete(result, total)
    figures(
        files=total, scored_before_kill=total - failed, error_rows=failed,
        rescored=failed, rows_lost=result["lost"], duplicated=result["duplicated"],
        differing=result["differing"], byte_identical=result["identical"],
    )  # fmt: skip


def test_client_killed_at_random_points_never_tears_a_row(
    served_model, many_digits, tmp_path, figures
):
    """`score --resume` (gRPC) is SIGKILLed once during start-up and then at random moments while
    it writes; after each kill every complete line is a whole row, no path twice; the last run
    completes the file, equal to an uninterrupted run's. Each kill lands a random fraction of a
    flush after the run's first flush, so how many kills fit does not depend on the machine's
    speed (with ten times the digits)."""
    folder, total, reference = many_digits
    out, target = tmp_path / "preds.csv", f"grpc://{served_model.grpc_target}"
    args = ("score", folder, "--out", out, "-s", target, "-b", 2, "-c", 1, "--resume")
    moments = random.Random(12)
    kills = unterminated = 0
    rows_at_kills = []
    for attempt in range(2 * CLIENT_KILLS):
        done = len(read_rows(out)) if out.exists() else 0
        if kills >= CLIENT_KILLS or done >= total - 20:
            break
        process = start_client(*args)
        try:
            if attempt == 0:
                time.sleep(moments.uniform(0.05, 0.6))  # importing, reading metadata
            else:
                wait_for_lines(out, 1 + done + 1, process, timeout=120)  # this run's first flush
                time.sleep(moments.uniform(0, FLUSH_SECONDS))
        finally:
            sigkill(process)
        if process.returncode != -9:
            continue  # finished before the kill: not a kill
        kills += 1
        lines, tail = complete_lines(out)
        unterminated += bool(tail)
        # read_rows raises ValueError for a complete line that is not a whole row.
        rows = read_rows(out) if out.exists() else []  # a kill during start-up: no file yet
        assert len(rows) == max(0, len(lines) - 1), "a complete line is not a row"
        paths = [row["path"] for row in rows]
        assert len(paths) == len(set(paths)), "a file has two rows"
        assert not any(row["error"] for row in rows)
        rows_at_kills.append(len(rows))
    assert kills >= 4, f"only {kills} runs were killed before they finished: {rows_at_kills}"
    assert any(rows_at_kills), "no kill landed while rows were being written"

    final = run_client(*args)
    assert final.returncode == 0, final.stderr
    result = compare_predictions(out, reference)
    assert_complete(result, total)
    figures(
        files=total, kills=kills, rows_at_kills="/".join(map(str, rows_at_kills)),
        unterminated_last_lines=unterminated, torn_rows=0, rows_lost=result["lost"],
        duplicated=result["duplicated"], differing=result["differing"],
        byte_identical=result["identical"],
    )  # fmt: skip


def test_score_rides_out_a_server_restart(published_model, many_digits, tmp_path, figures):
    """Two `score` runs (gRPC and REST, default --retry-seconds) are in flight when the server is
    SIGKILLed; it stays down OUTAGE_SECONDS, then starts again on the same ports. Both runs
    finish by themselves with every file scored once and exit 0: no --resume needed."""
    folder, total, reference = many_digits
    ports = Ports()
    flags = server_flags(published_model)
    outs = {"grpc": tmp_path / "grpc.csv", "rest": tmp_path / "rest.csv"}
    server = start_available(ports, *flags, log_path=tmp_path / "server.log")
    with stopped_at_exit(server.process) as processes:
        clients = {}
        for transport, url in (("grpc", ports.grpc_url), ("rest", ports.rest_url)):
            clients[transport] = start_client(
                "score", folder, "--out", outs[transport], "-s", url, "-b", 2, "-c", 2
            )
            processes.append(clients[transport])
        for transport, client in clients.items():
            wait_for_lines(outs[transport], 1 + 40, client, timeout=120)
        killed = time.monotonic()
        sigkill(server.process)
        at_kill = {t: len(read_rows(outs[t])) for t in outs}
        assert all(client.poll() is None for client in clients.values()), "finished too soon"
        assert all(count < total for count in at_kill.values()), at_kill
        time.sleep(OUTAGE_SECONDS)
        assert all(client.poll() is None for client in clients.values()), "a client gave up"
        server = start_server(ports, *flags, log_path=tmp_path / "server.log")
        processes.append(server.process)
        wait_until_available(server, MODEL)
        outage = time.monotonic() - killed
        for transport, client in clients.items():
            stderr = client.communicate(timeout=180)[1]
            assert client.returncode == 0, f"{transport}: {stderr}"
        finished = time.monotonic() - killed
    results = {transport: compare_predictions(out, reference) for transport, out in outs.items()}
    for result in results.values():
        assert_complete(result, total)
    figures(
        outage_s=f"{outage:.1f}", server_down_s=f"{OUTAGE_SECONDS:.0f}",
        clients_done_after_kill_s=f"{finished:.1f}",
        rows_at_kill=f"grpc {at_kill['grpc']}/rest {at_kill['rest']}",
        files=f"2x{total}", error_rows=0,
        rows_lost=sum(r["lost"] for r in results.values()),
        duplicated=sum(r["duplicated"] for r in results.values()),
        differing=sum(r["differing"] for r in results.values()),
    )  # fmt: skip
