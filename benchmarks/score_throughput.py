"""Throughput of `python -m client score` over gRPC against TF Serving's example client pattern.

The baseline is what `tensorflow_serving/example/mnist_client.py` does: one Predict request per
image, at most `--baseline-concurrency` in flight (the example's default is 1), 5 s deadline.
Both sides read the same PNG files, decode them with the same `client.preprocess.load_image`,
and talk to the same server in the same run; the baseline runs in this process (no start-up
cost), `score` as the real CLI in a subprocess (start-up, listing, metadata call and writing the
CSV included; the median of --score-runs runs). Both must agree on every prediction.

    # against a running server
    python benchmarks/score_throughput.py --server grpc://localhost:8500
    # or start the local server on a published model for the duration of the run
    python benchmarks/score_throughput.py --model-base-path models/mnist

Images: N MNIST test digits written as PNGs from the original IDX files (--mnist-dir, default
$MNIST_DIR or ../shared/data/mnist), or an existing folder with --images. The result table is
printed and written as JSON to benchmarks/results/score_throughput.json.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import platform
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from client.outputs import read_rows  # noqa: E402 - after the path tweak, for a plain checkout
from client.preprocess import list_images  # noqa: E402


def write_mnist_pngs(mnist_dir: Path, count: int, out: Path) -> Path:
    """The first `count` MNIST test digits as out/<label>/<index>.png, from the IDX files."""
    from PIL import Image

    with gzip.open(mnist_dir / "t10k-images-idx3-ubyte.gz") as handle:
        magic, total, rows, cols = struct.unpack(">IIII", handle.read(16))
        if magic != 2051:
            raise ValueError(f"{mnist_dir}: not an IDX image file (magic {magic})")
        if count > total:
            raise ValueError(f"--n {count} is more than the {total} MNIST test digits")
        images = np.frombuffer(handle.read(count * rows * cols), dtype=np.uint8)
    with gzip.open(mnist_dir / "t10k-labels-idx1-ubyte.gz") as handle:
        handle.read(8)
        labels = np.frombuffer(handle.read(count), dtype=np.uint8)
    for index, (image, label) in enumerate(
        zip(images.reshape(count, rows, cols), labels, strict=True)
    ):
        path = out / str(label) / f"{index:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path)
    return out


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def local_server(model_base_path: Path, model_name: str, log_path: Path) -> Iterator[str]:
    """`python -m serving` on free ports until the model is AVAILABLE; yields grpc://..."""
    grpc_port, rest_port = free_port(), free_port()
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "serving", f"--port={grpc_port}", f"--rest_api_port={rest_port}",
             f"--model_name={model_name}", f"--model_base_path={model_base_path.resolve()}"],
            cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        url = f"http://127.0.0.1:{rest_port}/v1/models/{model_name}"
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited with {process.returncode}; see {log_path}")
            with contextlib.suppress(OSError, ValueError):
                with urllib.request.urlopen(url, timeout=2) as reply:
                    states = [v["state"] for v in json.loads(reply.read())["model_version_status"]]
                if "AVAILABLE" in states:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{model_name} not AVAILABLE after 180 s; see {log_path}")
            time.sleep(0.3)
        yield f"grpc://127.0.0.1:{grpc_port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def one_image_per_request(
    server: str, model_name: str, files: list[Path], concurrency: int
) -> tuple[float, dict[str, int]]:
    """The example client's pattern: a Predict per image, `concurrency` futures in flight."""
    import grpc

    from client.preprocess import load_image
    from client.transport import parse_server, protos
    from client.transport.grpc_transport import CHANNEL_OPTIONS, to_numpy, to_tensor_proto

    pb = protos.load()
    channel = grpc.insecure_channel(parse_server(server).target, options=CHANNEL_OPTIONS)
    stub = pb.prediction_service_pb2_grpc.PredictionServiceStub(channel)
    predictions: dict[str, int] = {}
    errors: list[str] = []
    slots = threading.Semaphore(concurrency)
    done = threading.Event()
    remaining = [len(files)]
    lock = threading.Lock()

    def callback(name: str):
        def finished(future) -> None:
            try:
                outputs = future.result().outputs
                predictions[name] = int(np.argmax(to_numpy(outputs["probabilities"])))
            except grpc.RpcError as error:
                errors.append(f"{name}: {error.code().name}")
            finally:
                slots.release()
                with lock:
                    remaining[0] -= 1
                    if remaining[0] == 0:
                        done.set()

        return finished

    started = time.perf_counter()
    for path in files:
        # The same decoding as `score --preprocess none`: only the request pattern differs.
        image = load_image(path, height=28, width=28, channels=1, mode="none")[None]
        request = pb.predict_pb2.PredictRequest()
        request.model_spec.name = model_name
        request.inputs["images"].CopyFrom(to_tensor_proto(image))
        slots.acquire()
        future = stub.Predict.future(request, 5.0)
        future.add_done_callback(callback(path.as_posix()))
    if files:
        done.wait()
    seconds = time.perf_counter() - started
    channel.close()
    if errors:
        raise RuntimeError(f"{len(errors)} baseline requests failed, e.g. {errors[0]}")
    return seconds, predictions


def decode_all(files: list[Path]) -> float:
    """Seconds one thread needs to decode every file: the part of the work batching cannot cut."""
    from client.preprocess import load_image

    started = time.perf_counter()
    for path in files:
        load_image(path, height=28, width=28, channels=1, mode="none")
    return time.perf_counter() - started


def score_cli(server: str, model_name: str, folder: Path, out: Path, args) -> float:
    command = [
        sys.executable, "-m", "client", "score", str(folder), "--out", str(out), "--overwrite",
        "--server", server, "--model", model_name, "--batch-size", str(args.batch_size),
        "--concurrency", str(args.concurrency), "--preprocess", "none",
        "--decode-processes", str(args.decode_processes),
    ]  # fmt: skip
    started = time.perf_counter()
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"score exited with {result.returncode}: {result.stderr.strip()}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--server", help="A running server, grpc://HOST:PORT.")
    where.add_argument("--model-base-path", type=Path, help="Start the local server on this model.")
    parser.add_argument("--model", default="mnist", help="Model name (default: mnist).")
    parser.add_argument("--n", type=int, default=10_000, help="MNIST test digits to score.")
    parser.add_argument("--images", type=Path, help="Use this folder of PNGs instead.")
    default_mnist = os.environ.get("MNIST_DIR") or str(REPO_ROOT.parent / "shared/data/mnist")
    parser.add_argument("--mnist-dir", type=Path, default=Path(default_mnist))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--decode-processes", type=int, default=0)
    parser.add_argument("--baseline-concurrency", type=int, default=1)
    parser.add_argument(
        "--score-runs",
        type=int,
        default=3,
        help="Runs of `score`; the median counts (a run is short, so one noisy moment of a "
        "shared machine would otherwise decide the figure).",
    )
    parser.add_argument(
        "--json-out", type=Path, default=REPO_ROOT / "benchmarks/results/score_throughput.json"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="score-throughput-") as scratch:
        scratch = Path(scratch)
        folder = args.images or write_mnist_pngs(args.mnist_dir, args.n, scratch / "images")
        files = list_images(folder)
        if args.server:
            server_context = contextlib.nullcontext(args.server)
        else:
            server_context = local_server(args.model_base_path, args.model, scratch / "server.log")
        with server_context as server:
            one_image_per_request(server, args.model, files[:50], 1)  # warm the server up
            baseline_seconds, baseline = one_image_per_request(
                server, args.model, files, args.baseline_concurrency
            )
            score_runs = [
                score_cli(server, args.model, folder, scratch / "preds.csv", args)
                for _ in range(max(1, args.score_runs))
            ]
            score_seconds = statistics.median(score_runs)
            rows = read_rows(scratch / "preds.csv")
        decode_seconds = decode_all(files)

    scored = {(folder / row["path"]).as_posix(): row["class_id"] for row in rows}
    disagreements = sum(scored.get(path) != cls for path, cls in baseline.items())
    results = {
        "images": len(files),
        "server": args.server or f"local server on {args.model_base_path}",
        "baseline": {
            "pattern": "one Predict per image (tensorflow_serving/example/mnist_client.py)",
            "concurrency": args.baseline_concurrency,
            "requests": len(files),
            "seconds": round(baseline_seconds, 3),
            "images_per_second": round(len(files) / baseline_seconds, 1),
        },
        "score": {
            "pattern": "python -m client score (subprocess: start-up and CSV included)",
            "batch_size": args.batch_size,
            "concurrency": args.concurrency,
            "requests": -(-len(files) // args.batch_size),
            "decode_processes": args.decode_processes,
            "seconds": round(score_seconds, 3),
            "all_runs_seconds": [round(seconds, 3) for seconds in score_runs],
            "images_per_second": round(len(files) / score_seconds, 1),
        },
        "speedup": round(baseline_seconds / score_seconds, 2),
        # Both clients decode every PNG with client.preprocess.load_image; one thread's time for
        # that bounds how fast `score` can be on a machine whose cores are busy.
        "decode_seconds_one_thread": round(decode_seconds, 3),
        "prediction_disagreements": disagreements,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(results, indent=2) + "\n")

    print(f"{'client':<40} {'requests':>9} {'seconds':>9} {'images/s':>10}")
    for key in ("baseline", "score"):
        entry = results[key]
        label = "one image per request" if key == "baseline" else "client score"
        rate = entry["images_per_second"]
        print(f"{label:<40} {entry['requests']:>9} {entry['seconds']:>9.2f} {rate:>10.1f}")
    print(f"decoding alone (one thread): {decode_seconds:.2f} s")
    print(f"speed-up: {results['speedup']:.1f}x over {len(files)} images; "
          f"{disagreements} prediction disagreements; JSON: {args.json_out}")  # fmt: skip
    return 0 if disagreements == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
