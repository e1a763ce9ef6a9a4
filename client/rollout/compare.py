"""The promotion gate: `canary` against `stable` on one labelled folder, through the server.

Both labels score the same files with the client's scoring API (client.scoring.score_files), so
the predictions pair up image by image. The comparison holds, per label, the accuracy with its
Wilson interval, per-class accuracy and request latency (p50/p95 of the batch round trips each
image travelled in); between them the per-class deltas and McNemar's test on the paired
outcomes. `verdict` applies the thresholds; `write_report` writes report.json and report.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from client.evaluation import EvaluationError
from client.names import escape_name
from client.rollout import stats
from client.transport import Transport
from client.types import ModelSpec

REPORT_JSON = "report.json"
REPORT_MARKDOWN = "report.md"


@dataclass(frozen=True)
class Thresholds:
    min_delta: float = 0.0  # canary accuracy - stable accuracy must be at least this
    max_regression: float = 0.05  # no class may lose more accuracy than this
    alpha: float = 0.05  # significance level of McNemar's test
    require_significance: bool = False  # the gain must also be significant
    confidence: float = 0.95  # of the Wilson intervals


def labelled_files(folder: Path, report_dir: Path) -> tuple[list[str], list[Path], list[str]]:
    """(class folder names, files, the class folder of each file), as `evaluate` lists them."""
    from client.evaluation.folders import list_class_folders

    listed = list_class_folders(folder, skip=report_dir)
    files = listed.all_files
    if not files:
        raise EvaluationError(f"{escape_name(str(folder))} has no images in its class folders")
    owners = [name for name, paths in listed.files.items() for _ in paths]
    return list(listed.files), files, owners


def score_label(
    transport: Transport,
    model: str,
    label: str,
    version: int,
    files: list[Path],
    root: Path,
    *,
    batch_size: int,
    concurrency: int,
    timeout: float,
) -> list:
    """The ScoredImage of every file, scored through `label`, which must stay on `version`."""
    from client.scoring import score_files

    results = list(
        score_files(
            transport,
            ModelSpec(name=model, label=label),
            files,
            root=root,
            batch_size=batch_size,
            concurrency=concurrency,
            progress=False,
            timeout=timeout,
            input_check="off",
        )
    )
    moved = {r.model_version for r in results if r.ok and r.model_version != version}
    if moved:
        raise EvaluationError(
            f"{label} answered with version {', '.join(map(str, sorted(moved)))} instead of "
            f"{version} during the evaluation (someone moved it); run promote again"
        )
    return results


def compare(
    classes: list[str],
    owners: list[str],
    stable: tuple[int, list],
    canary: tuple[int, list],
    thresholds: Thresholds,
) -> dict:
    """The side-by-side comparison (plain data, as report.json holds it)."""
    from client.evaluation.folders import map_class_folders
    from client.evaluation.metrics import latency_percentiles

    known: dict[int, str] = {}
    for results in (stable[1], canary[1]):
        for result in results:
            if result.ok and result.class_name is not None:
                known.setdefault(result.class_id, result.class_name)
    width = max((len(r.probabilities) for r in stable[1] + canary[1] if r.ok), default=0)
    mapping = map_class_folders(classes, known, max(width, len(classes)))
    truth = np.array([mapping[name] for name in owners], dtype=np.int64)
    sides = {}
    correct = {}
    for label, (version, results) in (("stable", stable), ("canary", canary)):
        predicted = np.array([r.class_id if r.ok else -1 for r in results], dtype=np.int64)
        hits = predicted == truth
        correct[label] = hits
        failed = sum(1 for r in results if not r.ok)
        count = int(hits.sum())
        low, high = stats.wilson_interval(count, len(results), thresholds.confidence)
        latency = latency_percentiles([r.latency_ms for r in results if r.latency_ms is not None])
        sides[label] = {
            "version": version,
            "images": len(results),
            "correct": count,
            "failed": failed,
            "accuracy": count / len(results),
            "interval": [low, high],
            "latency_ms": {"p50": latency.p50, "p95": latency.p95},
        }
    per_class = []
    for name in classes:
        rows = truth == mapping[name]
        entry = {"class": name, "images": int(rows.sum())}
        for label in ("stable", "canary"):
            entry[label] = float(correct[label][rows].mean()) if rows.any() else None
        entry["delta"] = None if entry["images"] == 0 else entry["canary"] - entry["stable"]
        per_class.append(entry)
    test = stats.mcnemar(list(correct["stable"]), list(correct["canary"]))
    comparison = {
        "confidence": thresholds.confidence,
        "stable": sides["stable"],
        "canary": sides["canary"],
        "delta": sides["canary"]["accuracy"] - sides["stable"]["accuracy"],
        "per_class": per_class,
        "mcnemar": {
            "stable_only": test.stable_only,
            "canary_only": test.canary_only,
            "method": test.method,
            "statistic": test.statistic,
            "p_value": test.p_value,
        },
        "thresholds": {
            "min_delta": thresholds.min_delta,
            "max_regression": thresholds.max_regression,
            "alpha": thresholds.alpha,
            "require_significance": thresholds.require_significance,
        },
    }
    comparison["reasons"] = verdict(comparison, thresholds)
    comparison["passed"] = not comparison["reasons"]
    return comparison


def verdict(comparison: dict, thresholds: Thresholds) -> list[str]:
    """Why the canary may not become stable (empty: it may)."""
    reasons = []
    stable, canary = comparison["stable"], comparison["canary"]
    for label, side in (("stable", stable), ("canary", canary)):
        if side["failed"]:
            reasons.append(
                f"{side['failed']} of {side['images']} images could not be scored by {label} "
                f"(version {side['version']}); see the server's log"
            )
    delta = comparison["delta"]
    if delta < thresholds.min_delta - 1e-12:
        reasons.append(
            f"canary accuracy {canary['accuracy']:.4f} is {delta:+.4f} against stable's "
            f"{stable['accuracy']:.4f}, below --min-delta {thresholds.min_delta:+g}"
        )
    worst = min(
        (row for row in comparison["per_class"] if row["delta"] is not None),
        key=lambda row: row["delta"],
        default=None,
    )
    if worst is not None and -worst["delta"] > thresholds.max_regression + 1e-12:
        reasons.append(
            f"class {worst['class']!r} falls from {worst['stable']:.4f} to {worst['canary']:.4f} "
            f"({worst['images']} images), more than --max-regression {thresholds.max_regression:g}"
        )
    test = comparison["mcnemar"]
    worse = test["stable_only"] > test["canary_only"]
    significant = test["p_value"] < thresholds.alpha
    if worse and significant:
        reasons.append(
            f"canary is significantly worse: McNemar p = {test['p_value']:.4g} < --alpha "
            f"{thresholds.alpha:g} ({test['stable_only']} images only stable got right, "
            f"{test['canary_only']} only canary)"
        )
    if thresholds.require_significance and (worse or not significant):
        reasons.append(
            f"the difference is not a significant gain: McNemar p = {test['p_value']:.4g} "
            f"(--alpha {thresholds.alpha:g}, --require-significance), {test['stable_only']} "
            f"images only stable got right, {test['canary_only']} only canary"
        )
    return reasons


def write_report(report_dir: Path, comparison: dict, model: str, folder: Path) -> Path:
    """report.json and report.md in `report_dir`; returns the Markdown file's path."""
    report_dir.mkdir(parents=True, exist_ok=True)
    document = {"model": model, "folder": str(folder), **comparison}
    (report_dir / REPORT_JSON).write_text(json.dumps(document, indent=2) + "\n")
    path = report_dir / REPORT_MARKDOWN
    path.write_text(render_markdown(document))
    return path


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}%"


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f} ms"


def render_markdown(document: dict) -> str:
    stable, canary = document["stable"], document["canary"]
    confidence = f"{100 * document['confidence']:g}%"
    verdict_line = (
        "**Gate passed**: canary may become stable."
        if document["passed"]
        else "**Gate failed**, nothing moved:\n\n"
        + "".join(f"- {r}\n" for r in document["reasons"])
    )
    lines = [
        f"# Promotion gate: {document['model']} canary (version {canary['version']}) "
        f"against stable (version {stable['version']})",
        "",
        f"Folder `{document['folder']}`, {stable['images']} images, the same for both labels.",
        "",
        verdict_line.rstrip("\n"),
        "",
        f"| | stable (v{stable['version']}) | canary (v{canary['version']}) |",
        "| --- | --- | --- |",
        f"| accuracy | {_percent(stable['accuracy'])} | {_percent(canary['accuracy'])} |",
        f"| {confidence} Wilson interval | {_percent(stable['interval'][0])} – "
        f"{_percent(stable['interval'][1])} | {_percent(canary['interval'][0])} – "
        f"{_percent(canary['interval'][1])} |",
        f"| correct / failed | {stable['correct']} / {stable['failed']} | "
        f"{canary['correct']} / {canary['failed']} |",
        *(
            f"| latency {q} | {_ms(stable['latency_ms'][q])} | {_ms(canary['latency_ms'][q])} |"
            for q in ("p50", "p95")
        ),
        "",
        f"Accuracy delta (canary - stable): {100 * document['delta']:+.2f} points.",
        "",
    ]
    test = document["mcnemar"]
    statistic = "" if test["statistic"] is None else f", statistic {test['statistic']:.3f}"
    lines += [
        f"McNemar's test ({test['method']}{statistic}): {test['stable_only']} images only stable "
        f"got right, {test['canary_only']} only canary; p = {test['p_value']:.4g}.",
        "",
        "| class | images | stable | canary | delta |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in document["per_class"]:
        delta = "–" if row["delta"] is None else f"{100 * row['delta']:+.2f}"
        lines.append(
            f"| {escape_name(row['class'])} | {row['images']} | {_percent(row['stable'])} | "
            f"{_percent(row['canary'])} | {delta} |"
        )
    thresholds = document["thresholds"]
    lines += [
        "",
        f"Thresholds: --min-delta {thresholds['min_delta']:+g}, --max-regression "
        f"{thresholds['max_regression']:g} per class, --alpha {thresholds['alpha']:g}"
        + (", --require-significance" if thresholds["require_significance"] else "")
        + ".",
        "",
    ]
    return "\n".join(lines)
