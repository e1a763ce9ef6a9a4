"""`make bench`: every benchmark in this folder, one after another, and one table of them all.

    .venv/bin/python benchmarks/run_all.py            # the figures of issue 9 (~30 min on 2 cores)
    .venv/bin/python benchmarks/run_all.py --quick    # one short round of each
    .venv/bin/python benchmarks/run_all.py --only train_speed

First trains one model for the scoring and server benchmarks (`python -m trainer train
--preset fast`, published into a throw-away repository), then runs each script by its own
command line (each measures against its baseline in the same run, in interleaved rounds, and
writes benchmarks/results/<script>.json). Prints one Markdown table and writes it, with the
machine, the load average before and after, the date and the command, to
benchmarks/RESULTS.md, and everything to benchmarks/results/bench.json.

A script whose JSON has harness figures (benchmarks/harness.py) gets its rows in the joined
table; for one that has none yet, its printed output goes into RESULTS.md as it is.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import harness

BENCHMARKS = harness.ROOT / "benchmarks"
RESULTS_MD = BENCHMARKS / "RESULTS.md"
MODEL_NAME = "mnist"

# name -> (arguments of the full run, of --quick). {models} is the trained model's base path.
SCRIPTS: dict[str, tuple[list[str], list[str]]] = {
    "train_speed": ([], ["--quick"]),
    "score_throughput": (
        ["--model-base-path", "{models}"],
        ["--model-base-path", "{models}", "--n", "2000", "--score-runs", "1"],
    ),
    "server_overhead": (
        ["--model-base-path", "{models}"],
        ["--model-base-path", "{models}", "--rounds", "1", "--requests", "200", "--seconds", "3",
         "--trials", "2"],
    ),
}  # fmt: skip


def train_model(repository: Path) -> Path:
    """The tutorial's MLP with --preset fast, published as <repository>/mnist/1."""
    command = [
        sys.executable, "-m", "trainer", "train", "--dataset", "mnist",
        "--data-dir", str(harness.MNIST_DIR), "--model", "mlp", "--preset", "fast", "--seed", "1",
        "--model-repo", str(repository), "--model-name", MODEL_NAME,
        "--run-dir", str(repository.parent / "run"), "--progress", "lines",
    ]  # fmt: skip
    print(f"== model for scoring and serving: {shlex.join(command[1:])}", flush=True)
    subprocess.run(command, cwd=harness.ROOT, check=True, stdout=subprocess.DEVNULL)
    return repository / MODEL_NAME


def run_script(name: str, arguments: list[str]) -> dict:
    command = [sys.executable, str(BENCHMARKS / f"{name}.py"), *arguments]
    print(f"\n== {name}: {shlex.join(command[1:])}", flush=True)
    json_path = harness.RESULTS / f"{name}.json"
    json_path.unlink(missing_ok=True)
    started = time.monotonic()
    lines: list[str] = []
    with subprocess.Popen(
        command, cwd=harness.ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as process:
        for line in process.stdout:
            print(line, end="", flush=True)
            lines.append(line.rstrip("\n"))
    result = json.loads(json_path.read_text()) if json_path.is_file() else {}
    return {
        "name": name,
        "command": shlex.join(["python", *command[1:]]),
        "exit_code": process.returncode,
        "seconds": round(time.monotonic() - started, 1),
        "figures": result.get("figures"),
        "notes": result.get("notes", []),
        "load_average_before": result.get("load_average_before"),
        "load_average_after": result.get("load_average_after"),
        # Without harness figures, the script's own table is what there is to show.
        "output": [] if result.get("figures") else lines[-40:],
    }


def markdown(runs: list[dict], command: str, started: float, load_before, load_after) -> str:
    info = harness.machine()
    out = [
        "# Benchmark results",
        "",
        f"Latest `make bench`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}, "
        f"{info['cpu']}, {info['cores']} cores (shared with other jobs), Python "
        f"{info['python']}. Command: `{command}`. Load average (1, 5, 15 min) before "
        f"{load_before}, after {load_after}. Every figure is against a baseline measured in "
        "the same run, median [min–max] over interleaved rounds; what each script measures "
        "and how is in its docstring.",
        "",
        harness.TABLE_HEADER,
    ]
    for run in runs:
        out += [figure["row"] for figure in run["figures"] or []]
    out.append("")
    for run in runs:
        status = "" if run["exit_code"] == 0 else f", **exit code {run['exit_code']}**"
        out.append(
            f"- `{run['name']}`: `{run['command']}`, {run['seconds']:.0f} s, load average "
            f"before {run['load_average_before']}, after {run['load_average_after']}{status}"
        )
        out += [f"  - {note}" for note in run["notes"]]
    for run in runs:
        if run["output"]:
            out += ["", f"## {run['name']} (its own output)", "", "```", *run["output"], "```"]
    return "\n".join(out) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="One short round of each script.")
    parser.add_argument("--only", help=f"Comma-separated scripts: {', '.join(SCRIPTS)}.")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(SCRIPTS)
    if unknown := [name for name in names if name not in SCRIPTS]:
        parser.error(f"--only: unknown script {unknown[0]!r}; choose from {', '.join(SCRIPTS)}")
    command = shlex.join(["python", "benchmarks/run_all.py", *sys.argv[1:]])
    started, load_before = time.time(), harness.load_average()
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-") as scratch:
        models = None
        for name in names:
            arguments = SCRIPTS[name][1 if args.quick else 0]
            if any("{models}" in argument for argument in arguments) and models is None:
                models = train_model(Path(scratch) / "models")
            arguments = [argument.format(models=models) for argument in arguments]
            runs.append(run_script(name, arguments))
    load_after = harness.load_average()
    text = markdown(runs, command, started, load_before, load_after)
    RESULTS_MD.write_text(text)
    harness.RESULTS.mkdir(parents=True, exist_ok=True)
    (harness.RESULTS / "bench.json").write_text(
        json.dumps(
            {"command": command, "machine": harness.machine(), "load_average_before": load_before,
             "load_average_after": load_after, "seconds": round(time.time() - started, 1),
             "runs": runs},
            indent=1,
        ) + "\n"
    )  # fmt: skip
    print("\n" + text)
    print(f"wrote {RESULTS_MD} and {harness.RESULTS / 'bench.json'}")
    return 0 if all(run["exit_code"] == 0 for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
