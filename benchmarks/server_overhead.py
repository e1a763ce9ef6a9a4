"""The local server's own cost per request, against the model called in-process, in one run.

Figures (issue 9), each a ratio or difference to a baseline measured in the same run, in
interleaved rounds (median [min-max] over rounds):

- one image per request, concurrency 1, p50 over REST and gRPC, minus the p50 of the same
  SavedModel signature called in this process (the server's overhead);
- the same clients against the frameworks alone (benchmarks/floor_servers.py: grpcio's server
  and uvicorn+httptools+uvloop answering without parsing or running anything), so the overhead
  splits into the frameworks' floor and the local server's own code;
- one image per request, concurrency 16, requests per second and p99, without and with
  `--enable_batching` (serving/batching.config), for the MLP and for the trainer's CNN
  (untrained: its cost per request, not its accuracy, is what batching amortises);
- beside each, the most batching can gain on these cores: the clients run in this process on
  the same 2 cores as the server, so a request costs X of CPU outside the model (this process's
  and the server's CPU time per request at c=16 without batching, minus M1) plus the model,
  M1 per image at batch 1 or M16 per image at batch 16 (the server's signature call in this
  process). When the cores are the limit, batching gains at most (X + M1) / (X + M16). The
  CPU time per request with batching is printed beside it. On a machine shared with other jobs
  the cores are not all ours, and the measured gain can exceed this bound;
- the first request to a newly published version (warmup records included), as a ratio to
  the steady p50, in every trial, beside its controls: the first request after the same pause
  and status polling with no new version, and the first request to the do-nothing floor gRPC
  server after them, to its own p50 (on a shared machine a pause alone makes the next request
  slower, and that is not the swap's cost).

    python benchmarks/server_overhead.py                       # trains a small MLP first (~30 s)
    python benchmarks/server_overhead.py --model-base-path models/mnist

Writes benchmarks/results/server_overhead.json and prints the table (benchmarks/harness.py);
`make bench` joins it with the others in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import gzip
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks import harness

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS = REPO_ROOT / "benchmarks" / "results"
MODEL = "mnist"
BATCH = 16  # images per in-process batch: the batch the c=16 clients could at best make
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# The PID of each running server, by its REST URL: concurrent runs read its CPU time.
SERVER_PIDS: dict[str, int] = {}


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_digits(mnist_dir: Path, count: int) -> np.ndarray:
    with gzip.open(mnist_dir / "t10k-images-idx3-ubyte.gz") as handle:
        handle.read(16)
        data = handle.read(count * 784)
    return np.frombuffer(data, dtype=np.uint8).reshape(count, 28, 28, 1)


def train_model(repository: Path, mnist_dir: Path) -> Path:
    """A real trainer export (the tutorial MLP, 1 epoch on 5,000 digits), published as v1."""
    command = [
        sys.executable, "-m", "trainer", "train", "--dataset", "mnist", "--data-dir",
        str(mnist_dir), "--model", "mlp", "--epochs", "1", "--limit", "5000",
        "--model-repo", str(repository), "--model-name", MODEL,
        "--run-dir", str(repository.parent / "run"),
    ]  # fmt: skip
    subprocess.run(command, check=True, cwd=REPO_ROOT, stdout=subprocess.DEVNULL)
    return repository / MODEL


def export_untrained(kind: str, folder: Path, images: np.ndarray) -> Path:
    """The trainer's `kind` network, untrained, exported with the trainer's export code."""
    sys.path.insert(0, str(REPO_ROOT))
    from trainer import export, models

    model = models.build_model(kind, (28, 28, 1), 10)
    info = {"dataset": "mnist", "model": kind, "untrained": True}
    export.write_saved_model(model, folder / "1", [str(d) for d in range(10)], MODEL, info, images)
    return folder


@contextlib.contextmanager
def floor_servers(log_dir: Path) -> Iterator[tuple[str, str]]:
    """benchmarks/floor_servers.py for REST and gRPC; yields (rest url, grpc target)."""
    import grpc
    import requests

    ports = {"rest": free_port(), "grpc": free_port()}
    processes = []
    try:
        for kind, port in ports.items():
            with open(log_dir / f"floor-{kind}.log", "w") as log:
                processes.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            str(REPO_ROOT / "benchmarks" / "floor_servers.py"),
                            kind,
                            str(port),
                        ],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        rest, target = f"http://127.0.0.1:{ports['rest']}", f"127.0.0.1:{ports['grpc']}"
        with grpc.insecure_channel(target) as channel:
            grpc.channel_ready_future(channel).result(timeout=60)
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(rest, timeout=2)
                break
            except requests.RequestException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield rest, target
    finally:
        for process in processes:
            process.terminate()
            process.wait(30)


@contextlib.contextmanager
def server(
    base_path: Path, log_path: Path, *flags: str, checkout: Path = REPO_ROOT
) -> Iterator[tuple[str, str]]:
    grpc_port, rest_port = free_port(), free_port()
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "serving", f"--port={grpc_port}",
             f"--rest_api_port={rest_port}", f"--model_name={MODEL}",
             f"--model_base_path={base_path}", *flags],
            cwd=checkout, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    rest = f"http://127.0.0.1:{rest_port}"
    SERVER_PIDS[rest] = process.pid
    try:
        import requests

        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{rest}/v1/models/{MODEL}", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            if process.poll() is not None:
                raise RuntimeError(f"server exited:\n{log_path.read_text()[-2000:]}")
            time.sleep(0.3)
        yield rest, f"127.0.0.1:{grpc_port}"
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


class Clients:
    """One REST session and one gRPC stub per thread, sending one image per request."""

    def __init__(self, rest: str, grpc_target: str, image: np.ndarray) -> None:
        import grpc
        from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

        self.rest = rest
        self.url = f"{rest}/v1/models/{MODEL}:predict"
        self.body = json.dumps({"instances": image[None].tolist()}).encode()
        request = predict_pb2.PredictRequest()
        request.model_spec.name = MODEL
        shape = tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in (1, *image.shape)]
        )
        request.inputs["images"].CopyFrom(
            tensor_pb2.TensorProto(dtype=4, tensor_shape=shape, tensor_content=image.tobytes())
        )
        self.request = request
        self.channel = grpc.insecure_channel(grpc_target)
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.local = threading.local()

    def rest_call(self) -> None:
        import requests

        session = getattr(self.local, "session", None)
        if session is None:
            session = self.local.session = requests.Session()
            session.trust_env = False
        reply = session.post(self.url, data=self.body, timeout=30)
        reply.raise_for_status()

    def grpc_call(self) -> None:
        self.stub.Predict(self.request, timeout=30)


def latencies(call, count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return times


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def concurrent_run(call, threads: int, seconds: float, server_pid: int | None = None):
    """(requests per second, p99 seconds, CPU seconds per request) with `threads` callers for
    `seconds`; the CPU is this process's (the clients') plus the server's, when its PID is
    given, else the clients' alone."""
    cpu_before = own_cpu_seconds() + (cpu_seconds(server_pid) if server_pid else 0.0)
    stop = time.monotonic() + seconds
    per_thread: list[list[float]] = [[] for _ in range(threads)]

    def worker(index: int) -> None:
        while time.monotonic() < stop:
            started = time.perf_counter()
            call()
            per_thread[index].append(time.perf_counter() - started)

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(worker, range(threads)))
    elapsed = time.perf_counter() - started
    cpu = own_cpu_seconds() + (cpu_seconds(server_pid) if server_pid else 0.0) - cpu_before
    times = [t for part in per_thread for t in part]
    return len(times) / elapsed, percentile(times, 99), cpu / len(times)


def in_process(version_dir: Path, image: np.ndarray):
    """The signature called in this process the way the server calls it, and via tf.function."""
    import tensorflow as tf

    sys.path.insert(0, str(REPO_ROOT))
    from serving.servable import LoadedVersion

    servable = LoadedVersion(MODEL, 1, version_dir)
    signature = servable.signature("serving_default")
    batch = image[None]
    loaded = tf.saved_model.load(str(version_dir))
    function = loaded.signatures["serving_default"]
    tensor = tf.constant(batch)
    return (lambda: signature.run({"images": batch})), (lambda: function(images=tensor))


def batch_costs(signature, images: np.ndarray, count: int) -> tuple[float, float]:
    """Seconds per image of the server's signature call (serving.servable) in this process,
    p50, at batch 1 and at batch len(images): what batching can save per image at most."""
    costs = []
    for batch in (images[:1], images):
        call = lambda batch=batch: signature.run({"images": batch})  # noqa: E731
        latencies(call, 20)
        costs.append(percentile(latencies(call, count), 50) / len(batch))
    return costs[0], costs[1]


def first_request_trials(
    base: Path, rest: str, clients: Clients, trials: int, floor: Clients
) -> tuple[list[float], list[float], list[float]]:
    """Time the first request a newly published version answers (copy, then rename), and, as
    its controls, the first request after the same pause with no new version, and the first
    request to the do-nothing floor gRPC server after the same pause and polling, in turn.

    The controls matter on a shared machine: after 1.5 s idle the first request is slower
    whatever the server did, so "first / steady" alone blames the swap; the floor server's
    ratio (its first request / its own steady p50) is what the machine and grpcio alone cost.
    """
    import requests

    swapped, idle, bare = [], [], []
    source = sorted((p for p in base.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))[0]
    for trial in range(trials):
        for publish in (None, False, True):
            if publish:
                version = 100 + trial
                staging = base / f".staging-{version}"
                shutil.copytree(source, staging)
                staging.rename(base / str(version))
            deadline = time.monotonic() + 120
            polls = 0
            while time.monotonic() < deadline:  # the same status polling in both cases
                status = requests.get(f"{rest}/v1/models/{MODEL}", timeout=5).json()
                states = {int(s["version"]): s["state"] for s in status["model_version_status"]}
                polls += 1
                if (states.get(version) == "AVAILABLE") if publish else polls >= 10:
                    break
                time.sleep(0.01)
            started = time.perf_counter()
            (floor if publish is None else clients).grpc_call()
            elapsed = time.perf_counter() - started
            (bare if publish is None else swapped if publish else idle).append(elapsed)
            time.sleep(1.5)  # let the old version's unload finish before the next trial
    return swapped, idle, bare


def in_ms(entry: dict) -> dict:
    return {**entry, **{k: entry[k] * 1000 for k in ("median", "min", "max")},
            "rounds": [value * 1000 for value in entry["rounds"]]}  # fmt: skip


def add_figures(report, results: dict, c: int, trials: int) -> None:
    """The table rows (benchmarks/harness.py), milliseconds where times."""
    Figure = harness.Figure
    report.add(
        Figure(
            "local server: SavedModel signature in-process, p50",
            now=in_ms(results["model_session_p50"]),
            unit="ms",
            note="the model cost every figure below "
            "subtracts; tf.function: " + harness.fmt(in_ms(results["model_function_p50"])),
        )
    )
    for transport, name in (("rest", "REST"), ("grpc", "gRPC")):
        report.add(
            Figure(
                f"local server {name}, one image, c=1: overhead = p50 − model",
                unit="ms",
                now=in_ms(results[f"{transport}_c1_overhead"]),
                goal="≤ 0.5 ms",
                limit=0.5,
                note=f"p50 {harness.fmt(in_ms(results[f'{transport}_c1_p50']))} ms",
            )
        )
        report.add(
            Figure(
                f"local server {name}: the frameworks' floor (same client, a server that does "
                "nothing: benchmarks/floor_servers.py), p50",
                unit="ms",
                now=in_ms(results[f"{transport}_c1_floor"]),
            )
        )
        report.add(
            Figure(
                f"local server {name}: its own code, p50 − model − floor",
                unit="ms",
                now=in_ms(results[f"{transport}_c1_own"]),
            )
        )
        for kind, model in (("", "MLP"), ("cnn_", "CNN (untrained)")):
            key = f"{kind}{transport}_c{c}"
            p99 = (harness.fmt(in_ms(results[f"{key}_{label}_p99"]), digits=1)
                   for label in ("batched", "plain"))  # fmt: skip
            report.add(
                Figure(
                    f"local server {name} {model}, one image, c={c}: req/s with "
                    "--enable_batching vs without",
                    digits=0,
                    now=results[f"{key}_batched_rps"],
                    baseline=results[f"{key}_plain_rps"],
                    goal="≥ 3×",
                    limit=3.0,
                    higher_is_better=True,
                    note="p99 {} ms vs {} ms".format(*p99),
                )
            )
            ms = {
                label: harness.fmt(in_ms(results[name]))
                for label, name in (
                    ("X", f"{kind}{transport}_outside_cpu"),
                    ("M1", f"{kind}model_b1"),
                    ("M16", f"{kind}model_b{BATCH}"),
                    ("plain", f"{key}_plain_cpu"),
                    ("batched", f"{key}_batched_cpu"),
                )
            }
            report.add(
                Figure(
                    f"local server {name} {model}, c={c}: the most batching can gain here, "
                    f"(X + M1) / (X + M{BATCH})",
                    now=results[f"{kind}{transport}_batching_bound"],
                    unit="×",
                    note=f"X = {ms['X']} ms of CPU per request outside the model (clients and "
                    f"server, c={c} without batching, minus M1); model in-process per image: "
                    f"M1 = {ms['M1']} ms at batch 1, M{BATCH} = {ms['M16']} ms at batch {BATCH}; "
                    f"CPU per request measured: {ms['plain']} ms without batching, "
                    f"{ms['batched']} ms with",
                )
            )
    first = results["first_request_ratio"]
    report.add(
        Figure(
            f"first request to a newly published version / steady gRPC p50 ({trials} trials)",
            now=first,
            goal="≤ 1.5× in every trial",
            met=first["max"] <= 1.5,
            unit="×",
        )
    )
    report.add(
        Figure(
            "control: first request after the same pause, no new version / steady gRPC p50",
            now=results["idle_first_request_ratio"],
            unit="×",
        )
    )
    report.add(
        Figure(
            "control: floor gRPC server's first request after the same pause / its steady p50",
            now=results["floor_idle_first_request_ratio"],
            unit="×",
            note="a do-nothing server (benchmarks/floor_servers.py): what the idle pause "
            "costs on this machine with no server code",
        )
    )
    report.add(
        Figure(
            "first request to a new version / the control's (trial by trial)",
            now=results["first_request_vs_idle"],
            unit="×",
        )
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-base-path", type=Path, help="Serve this model (else train one).")
    default_mnist = os.environ.get("MNIST_DIR") or str(REPO_ROOT.parent / "shared/data/mnist")
    parser.add_argument("--mnist-dir", type=Path, default=Path(default_mnist))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=500, help="Per latency measurement.")
    parser.add_argument("--seconds", type=float, default=4, help="Per concurrency measurement.")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--trials", type=int, default=5, help="First-request trials.")
    parser.add_argument(
        "--server-checkout",
        type=Path,
        default=REPO_ROOT,
        help="Run python -m serving from this checkout (e.g. a git worktree of an older "
        "commit, for a before/after table); the in-process baseline stays this one's.",
    )
    args = parser.parse_args()

    report = harness.Report("server_overhead", json_out=RESULTS / "server_overhead.json")
    work = Path(tempfile.mkdtemp(prefix="bench-server-"))
    try:
        if args.model_base_path:
            base = work / "repository" / MODEL
            shutil.copytree(args.model_base_path, base)
        else:
            base = train_model(work / "repository", args.mnist_dir)
        version_dir = sorted(
            (p for p in base.iterdir() if p.name.isdigit()), key=lambda p: int(p.name)
        )[-1]
        digits = test_digits(args.mnist_dir, BATCH)
        image = digits[0]
        cnn_base = export_untrained("cnn", work / "cnn-repository" / MODEL, digits)
        session_call, function_call = in_process(version_dir, image)
        from serving.servable import LoadedVersion

        signatures = {
            kind: LoadedVersion(MODEL, 1, folder).signature("serving_default")
            for kind, folder in (("", version_dir), ("cnn_", cnn_base / "1"))
        }
        batching = [
            "--enable_batching=true",
            f"--batching_parameters_file={REPO_ROOT / 'serving' / 'batching.config'}",
        ]
        rounds: dict[str, list[float]] = {}
        c = args.concurrency

        def record(name: str, value: float) -> None:
            rounds.setdefault(name, []).append(value)

        checkout = args.server_checkout
        with (
            server(base, work / "plain.log", checkout=checkout) as (rest, grpc_target),
            server(base, work / "batched.log", *batching, checkout=checkout) as (b_rest, b_grpc),
            server(cnn_base, work / "cnn.log", checkout=checkout) as (cnn_rest, cnn_grpc),
            server(cnn_base, work / "cnn-batched.log", *batching, checkout=checkout) as (
                cnn_b_rest,
                cnn_b_grpc,
            ),
            floor_servers(work) as (floor_rest, floor_grpc),
        ):
            clients = {
                "plain": Clients(rest, grpc_target, image),
                "batched": Clients(b_rest, b_grpc, image),
                "cnn_plain": Clients(cnn_rest, cnn_grpc, image),
                "cnn_batched": Clients(cnn_b_rest, cnn_b_grpc, image),
                "floor": Clients(floor_rest, floor_grpc, image),
            }
            plain, floor = clients["plain"], clients["floor"]
            for call in (session_call, function_call):
                latencies(call, 50)  # warm every path
            for each in clients.values():
                latencies(each.rest_call, 50)
                latencies(each.grpc_call, 50)
            for _ in range(args.rounds):  # interleaved: every figure once per round
                for model_kind, signature in signatures.items():
                    one, many = batch_costs(signature, digits, args.requests // 5)
                    record(f"{model_kind}model_b1", one)
                    record(f"{model_kind}model_b{BATCH}", many)
                model = percentile(latencies(session_call, args.requests), 50)
                record("model_session_p50", model)
                record(
                    "model_function_p50", percentile(latencies(function_call, args.requests), 50)
                )
                for transport in ("rest", "grpc"):
                    p50 = percentile(
                        latencies(getattr(plain, f"{transport}_call"), args.requests), 50
                    )
                    bare = percentile(
                        latencies(getattr(floor, f"{transport}_call"), args.requests), 50
                    )
                    record(f"{transport}_c1_p50", p50)
                    record(f"{transport}_c1_overhead", p50 - model)
                    record(f"{transport}_c1_floor", bare)
                    record(f"{transport}_c1_own", p50 - model - bare)
                    for model_kind in ("", "cnn_"):
                        for label in ("plain", "batched"):
                            each = clients[f"{model_kind}{label}"]
                            rate, p99, cpu = concurrent_run(
                                getattr(each, f"{transport}_call"), c, args.seconds,
                                SERVER_PIDS[each.rest],
                            )  # fmt: skip
                            record(f"{model_kind}{transport}_c{c}_{label}_rps", rate)
                            record(f"{model_kind}{transport}_c{c}_{label}_p99", p99)
                            record(f"{model_kind}{transport}_c{c}_{label}_cpu", cpu)
                        record(
                            f"{model_kind}{transport}_batching_gain",
                            rounds[f"{model_kind}{transport}_c{c}_batched_rps"][-1]
                            / rounds[f"{model_kind}{transport}_c{c}_plain_rps"][-1],
                        )
                        # The bound: per request, CPU outside the model (X, clients and
                        # server, measured without batching) plus the model at batch 1,
                        # against X plus the model's cost per image at batch 16.
                        one, many = (
                            rounds[f"{model_kind}model_b1"][-1],
                            rounds[f"{model_kind}model_b{BATCH}"][-1],
                        )
                        outside = rounds[f"{model_kind}{transport}_c{c}_plain_cpu"][-1] - one
                        record(f"{model_kind}{transport}_outside_cpu", outside)
                        record(
                            f"{model_kind}{transport}_batching_bound",
                            (outside + one) / (outside + many),
                        )
            steady = statistics.median(rounds["grpc_c1_p50"])
            floor_steady = statistics.median(rounds["grpc_c1_floor"])
            first, idle, bare = first_request_trials(base, rest, plain, args.trials, floor)
        results = {name: harness.summary(values) for name, values in rounds.items()}
        results["first_request_ratio"] = harness.summary([t / steady for t in first])
        results["idle_first_request_ratio"] = harness.summary([t / steady for t in idle])
        results["first_request_vs_idle"] = harness.summary(
            [t / i for t, i in zip(first, idle, strict=True)]
        )
        results["floor_idle_first_request_ratio"] = harness.summary(
            [t / floor_steady for t in bare]
        )
        results["server_checkout"] = str(args.server_checkout)
        report.details = results
        add_figures(report, results, c, args.trials)
        report.finish()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
