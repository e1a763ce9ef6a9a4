"""What every benchmark in this folder shares: interleaved rounds, median [min–max], the
machine, one Markdown table and one JSON file per script.

A script measures its figures against a baseline taken in the same run, in rounds that
alternate the two (so a load spike from the other jobs on a shared machine lands on both),
and ends with::

    report = harness.Report("train_speed")          # notes the load average and the command
    rounds = harness.interleave(3, {"baseline": run_baseline, "ours": run_ours})
    report.add(harness.Figure(
        "seconds per epoch", now=harness.summary(rounds["ours"]),
        baseline=harness.summary(rounds["baseline"]), goal="≤ 1.0×", limit=1.0, unit="s",
    ))
    report.finish()                                 # prints the table, writes results/<name>.json

`benchmarks/run_all.py` (`make bench`) runs every script and joins their tables.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
MNIST_DIR = Path(os.environ.get("MNIST_DIR") or ROOT.parent / "shared" / "data" / "mnist")
TABLE_HEADER = (
    "| figure | now | baseline | ratio | goal | met? |\n| --- | --- | --- | --- | --- | --- |"
)


def command_env() -> dict[str, str]:
    """The environment for a command whose start-up is measured: this one, with Python's
    bytecode cache on. Some shells and sandboxes set PYTHONDONTWRITEBYTECODE (this machine's
    does), and then every run compiles the project's own modules from source again: ~0.1 s of
    a one-file `score` that no installed copy pays."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def machine() -> dict:
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def summary(values: list[float]) -> dict:
    """Median and spread of one figure's rounds (the rounds are kept for the JSON)."""
    if not values:
        raise ValueError("a figure needs at least one round")
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "rounds": list(values),
    }


def fmt(entry: dict | float | None, scale: float = 1.0, digits: int = 2, unit: str = "") -> str:
    """'3.59 s [3.14–3.90]' for a summary, '3.59 s' for a single value, '—' for none."""
    suffix = f" {unit}" if unit else ""
    if entry is None:
        return "—"
    if not isinstance(entry, dict):
        return f"{entry * scale:,.{digits}f}{suffix}"
    text = f"{entry['median'] * scale:,.{digits}f}{suffix}"
    if len(entry["rounds"]) > 1:
        text += f" [{entry['min'] * scale:,.{digits}f}–{entry['max'] * scale:,.{digits}f}]"
    return text


def interleave(rounds: int, measurements: dict[str, Callable[[int], float]]) -> dict:
    """Call every measurement once per round, the order rotated each round; their values.

    Each callable gets the round number (0-based; e.g. as a seed) and returns one value.
    """
    names = list(measurements)
    values: dict[str, list[float]] = {name: [] for name in names}
    for round_number in range(rounds):
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            values[name].append(measurements[name](round_number))
            print(
                f"  round {round_number + 1}/{rounds} {name}: {values[name][-1]:.4g}  "
                f"(load {load_average()[0]})",
                flush=True,
            )
    return values


@dataclass
class Figure:
    """One row of the table. `now` and `baseline` are summaries or single values.

    `ratio` defaults to now / baseline (medians); the goal is met when `ratio` (or `now` when
    there is no baseline) lies on the right side of `limit` — at most it, or with
    `higher_is_better`, at least it. `met` may also be given outright (e.g. "on every seed").
    """

    figure: str
    now: dict | float | None
    baseline: dict | float | None = None
    goal: str = "—"
    limit: float | None = None
    higher_is_better: bool = False
    unit: str = ""
    digits: int = 2
    ratio: float | None = None
    met: bool | None = None
    note: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.ratio is None and self.now is not None and self.baseline is not None:
            baseline = _median(self.baseline)
            if baseline:
                self.ratio = _median(self.now) / baseline
        if self.met is None and self.limit is not None:
            value = self.ratio if self.baseline is not None else _median(self.now)
            if value is not None:
                self.met = value >= self.limit if self.higher_is_better else value <= self.limit

    def row(self) -> str:
        # Three significant digits: 0.254× must not print as a goal of ≤ 0.25× met.
        ratio = "—" if self.ratio is None else f"{self.ratio:.3g}×"
        met = {True: "yes", False: "**no**", None: "—"}[self.met]
        now = fmt(self.now, digits=self.digits, unit=self.unit)
        if self.note:
            now += f" ({self.note})"
        baseline = fmt(self.baseline, digits=self.digits, unit=self.unit)
        return f"| {self.figure} | {now} | {baseline} | {ratio} | {self.goal} | {met} |"

    def as_json(self) -> dict:
        return {
            "figure": self.figure,
            "now": self.now,
            "baseline": self.baseline,
            "ratio": self.ratio,
            "goal": self.goal,
            "met": self.met,
            "unit": self.unit,
            "note": self.note,
            "row": self.row(),
            **self.extra,
        }


def _median(entry: dict | float | None) -> float | None:
    return entry["median"] if isinstance(entry, dict) else entry


def table(rows: list[str]) -> str:
    return "\n".join([TABLE_HEADER, *rows])


@dataclass(frozen=True)
class Recorded:
    """A Figure another process measured, as its JSON (`Figure.as_json()`) holds it."""

    data: dict

    @property
    def met(self) -> bool | None:
        return self.data.get("met")

    def row(self) -> str:
        return self.data["row"]

    def as_json(self) -> dict:
        return self.data


class Report:
    """One script's results: the figures, the machine, the load before and after, the command.

    `finish()` prints the Markdown table and writes `benchmarks/results/<name>.json`, which
    `run_all.py` reads back (its `figures[].row` are the table's rows).
    """

    def __init__(self, name: str, json_out: Path | None = None) -> None:
        self.name = name
        self.json_out = json_out or RESULTS / f"{name}.json"
        self.figures: list[Figure] = []
        self.notes: list[str] = []  # Markdown lines shown under the table (e.g. a curve)
        self.details: dict = {}
        self.started = time.time()
        self.load_before = load_average()
        self.command = shlex.join([Path(sys.executable).name, *sys.argv])
        print(f"{name}: load average before {self.load_before}, {os.cpu_count()} cores", flush=True)

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        return figure

    def finish(self) -> dict:
        load_after = load_average()
        result = {
            "name": self.name,
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
            "seconds": round(time.time() - self.started, 1),
            "command": self.command,
            "machine": machine(),
            "load_average_before": self.load_before,
            "load_average_after": load_after,
            "figures": [figure.as_json() for figure in self.figures],
            "notes": self.notes,
            "details": self.details,
        }
        self.json_out.parent.mkdir(parents=True, exist_ok=True)
        self.json_out.write_text(json.dumps(result, indent=1, default=float) + "\n")
        print(f"\n{self.name}: load average before {self.load_before}, after {load_after}")
        print(table([figure.row() for figure in self.figures]))
        if self.notes:
            print("\n" + "\n".join(self.notes))
        print(f"wrote {self.json_out}", flush=True)
        return result
