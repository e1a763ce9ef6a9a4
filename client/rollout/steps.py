"""The rollout steps: init, status, canary, promote, rollback.

Each step rewrites `<repo>/models.config` (common.rollout_state) and waits until every server
shows the result. Pins: a step keeps exactly these versions in the `specific` policy: the ones
`stable` and `canary` point at, and the rollback target (the stable before the current one), so
`rollback` moves a label onto a version that is still loaded. Other pins are dropped; a version
being brought up is pinned on its own first, because TF Serving refuses to point a label at a
version that is not AVAILABLE and would refuse the whole file.

One command at a time per repository: each holds the repository's lock from start to end.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from client.errors import ClientError
from client.rollout import compare
from client.rollout.servers import (
    Servers,
    ServerView,
    WaitTimeout,
    labels_at,
    version_available,
)
from common import rollout_state as rs
from common.cli import OneLineError

LABELS = [rs.STABLE, rs.CANARY]
GATE_FAILED = 3  # exit code: the gate refused, nothing moved


class RolloutError(OneLineError):
    """A step that cannot be done or whose gate failed; one line, and the CLI's exit code."""


@dataclass(frozen=True)
class Target:
    """Where a step acts: the repository on this machine, one model, the servers to wait for."""

    repo: Path
    model: str
    servers: list[str]
    timeout: float
    say: Callable[[str], None] = print


def versions_on_disk(target: Target) -> list[int]:
    folder = target.repo / target.model
    if not folder.is_dir():
        return []
    return sorted(
        int(child.name)
        for child in folder.iterdir()
        if child.name.isascii() and child.name.isdigit() and int(child.name) > 0 and child.is_dir()
    )


def _read(target: Target) -> tuple[rs.RolloutState, rs.ModelEntry]:
    try:
        state = rs.read(target.repo)
    except rs.StateError as error:
        raise RolloutError(str(error)) from None
    entry = state.model(target.model) if state else None
    if entry is None:
        where = rs.config_path(target.repo)
        raise RolloutError(
            f"{where} has no rollout state for {target.model!r}; the first publish of a model "
            f"starts it, or run 'python -m client rollout init --model-repo {target.repo} "
            f"--model {target.model}'",
            exit_code=2,
        )
    return state, entry


def stable_chain(state: rs.RolloutState, entry: rs.ModelEntry) -> list[int]:
    """The stable versions, oldest first, as promotions pushed them and rollbacks popped them."""
    chain: list[int] = []
    for move in state.label_history(entry.name, rs.STABLE):
        if move.step == "rollback":
            if chain and chain[-1] == move.old:
                chain.pop()
            if not chain or chain[-1] != move.new:
                chain.append(move.new)
        elif not chain or chain[-1] != move.new:
            chain.append(move.new)
    current = entry.labels.get(rs.STABLE)
    if current is not None and (not chain or chain[-1] != current):
        chain.append(current)  # moved by hand: the file is the truth
    return chain


def rollback_target(state: rs.RolloutState, entry: rs.ModelEntry) -> int | None:
    chain = stable_chain(state, entry)
    current = entry.labels.get(rs.STABLE)
    earlier = [version for version in chain[:-1] if version != current]
    return earlier[-1] if earlier else None


def pins_for(state: rs.RolloutState, entry: rs.ModelEntry, on_disk: list[int]) -> tuple[int, ...]:
    pins = set(entry.labels.values())
    target = rollback_target(state, entry)
    if target is not None and target in on_disk:
        pins.add(target)
    return tuple(sorted(pins))


def _save(target: Target, state: rs.RolloutState) -> None:
    try:
        rs.save(target.repo, state)
    except OSError as error:
        raise RolloutError(f"cannot write {rs.config_path(target.repo)}: {error}") from None


def _wait(target: Target, connected: Servers, check, what: str) -> list[ServerView]:
    started = time.monotonic()
    try:
        views = connected.wait(target.model, LABELS, check, target.timeout, what)
    except WaitTimeout as error:
        raise RolloutError(str(error)) from None
    count = len(views)
    target.say(
        f"{what}: shown by {count} server{'s' if count != 1 else ''} "
        f"({time.monotonic() - started:.1f} s)"
    )
    return views


def _connect(target: Target) -> Servers:
    try:
        return Servers(target.servers)
    except (ValueError, ModuleNotFoundError) as error:
        raise RolloutError(f"--server: {error}", exit_code=2) from None


def _bring_up(
    target: Target, connected: Servers, state: rs.RolloutState, entry: rs.ModelEntry, version: int
) -> tuple[rs.RolloutState, rs.ModelEntry]:
    """Pin `version` beside the current pins and wait until every server has it AVAILABLE.

    On failure the pin is taken back, so a broken version is not left loaded (or loading).
    """
    pins = set(pins_for(state, entry, versions_on_disk(target)))
    if entry.policy == "specific":
        pins |= set(entry.pins)
    if version not in pins or entry.policy != "specific":
        pinned = replace(entry, policy="specific", pins=tuple(sorted(pins | {version})))
        state = state.with_model(pinned)
        _save(target, state)
        entry = pinned
        target.say(f"pinned version {version} of {target.model} in {rs.config_path(target.repo)}")
    try:
        _wait(target, connected, version_available(version), f"version {version} AVAILABLE")
    except RolloutError:
        if version not in entry.labels.values():
            back = replace(entry, pins=tuple(v for v in entry.pins if v != version))
            if back.pins:
                _save(target, state.with_model(back))
                target.say(f"unpinned version {version} again")
        raise
    return state, entry


def _move(
    target: Target,
    state: rs.RolloutState,
    entry: rs.ModelEntry,
    moves: dict[str, int],
    step: str,
) -> tuple[rs.RolloutState, rs.ModelEntry]:
    labels = dict(entry.labels)
    for label, version in moves.items():
        if labels.get(label) != version:  # a step repeated records no move
            state = state.moved(target.model, label, labels.get(label), version, step)
        labels[label] = version
    moved = replace(entry, policy="specific", labels=labels)
    moved = replace(moved, pins=pins_for(state, moved, versions_on_disk(target)))
    state = state.with_model(moved)
    _save(target, state)
    return state, moved


# ---- the steps ----------------------------------------------------------------------------


def init(target: Target, version: int | None, base_path: str | None) -> str:
    """Start the rollout state of a model already on disk (both labels on `version`)."""
    on_disk = versions_on_disk(target)
    if version is None:
        if not on_disk:
            raise RolloutError(
                f"{target.repo / target.model} has no versions; publish one first "
                "('make train'), which starts the rollout state itself",
                exit_code=2,
            )
        version = on_disk[-1]
    elif version not in on_disk:
        raise RolloutError(f"{target.repo / target.model} has no version {version}", exit_code=2)
    base = base_path or str((target.repo / target.model).resolve())
    with rs.locked(target.repo):
        try:
            state = rs.read(target.repo) or rs.RolloutState()
        except rs.StateError as error:
            raise RolloutError(str(error)) from None
        if state.model(target.model) is not None:
            where = rs.config_path(target.repo)
            return f"{where} already has rollout state for {target.model}; left alone"
        entry = rs.ModelEntry(target.model, base, pins=(version,), labels={})
        state = state.with_model(entry)
        _move(target, state, entry, {rs.STABLE: version, rs.CANARY: version}, "init")
    return (
        f"{rs.config_path(target.repo)}: {target.model} stable and canary on version {version} "
        f"(base path {base})"
    )


def status(target: Target) -> dict:
    """Versions on disk, labels and pins in the file, and what each server reports."""
    state, entry = _read(target)
    document = {
        "model": target.model,
        "config": str(rs.config_path(target.repo)),
        "base_path": entry.base_path,
        "on_disk": versions_on_disk(target),
        "policy": entry.policy,
        "pins": list(entry.pins) if entry.policy == "specific" else None,
        "labels": entry.labels,
        "rollback_to": rollback_target(state, entry),
        "history": [move.line().removeprefix("# history: ") for move in state.history[-5:]],
        "servers": [],
    }
    with _connect(target) as connected:
        for view in connected.views(target.model, LABELS):
            document["servers"].append(
                {
                    "server": view.server,
                    "error": view.error,
                    "versions": {str(v): s for v, s in sorted(view.states.items())},
                    "load_errors": {str(v): e for v, e in view.errors.items()},
                    "labels": view.labels,
                }
            )
    return document


def canary(target: Target, version: int) -> str:
    """Pin `version`, wait until it is AVAILABLE everywhere, then point `canary` at it."""
    if version not in versions_on_disk(target):
        raise RolloutError(f"{target.repo / target.model} has no version {version}", exit_code=2)
    with rs.locked(target.repo), _connect(target) as connected:
        state, entry = _read(target)
        old = entry.labels.get(rs.CANARY)
        state, entry = _bring_up(target, connected, state, entry, version)
        state, entry = _move(target, state, entry, {rs.CANARY: version}, "canary")
        _wait(target, connected, labels_at({rs.CANARY: version}), f"canary -> {version}")
    return f"canary: {old} -> {version} (stable stays on {entry.labels.get(rs.STABLE)})"


def promote(
    target: Target,
    folder: Path,
    report_dir: Path,
    thresholds: compare.Thresholds,
    *,
    batch_size: int,
    concurrency: int,
    request_timeout: float,
) -> str:
    """Evaluate canary against stable through the first server; move stable if the gate passes."""
    with rs.locked(target.repo), _connect(target) as connected:
        state, entry = _read(target)
        stable, canary_version = entry.labels.get(rs.STABLE), entry.labels.get(rs.CANARY)
        if stable is None or canary_version is None:
            raise RolloutError(f"{target.model} needs both a stable and a canary label")
        if stable == canary_version:
            raise RolloutError(
                f"canary and stable both point at version {stable}: nothing to promote; "
                "'python -m client rollout canary N' first"
            )
        expected = {rs.STABLE: stable, rs.CANARY: canary_version}
        _wait(target, connected, labels_at(expected), f"stable {stable}, canary {canary_version}")
        try:
            classes, files, owners = compare.labelled_files(folder, report_dir)
            transport = connected.transport(target.servers[0])
            scored = {}
            for label, version in expected.items():
                target.say(f"evaluating {label} (version {version}) on {len(files)} images")
                scored[label] = compare.score_label(
                    transport, target.model, label, version, files, folder,
                    batch_size=batch_size, concurrency=concurrency, timeout=request_timeout,
                )  # fmt: skip
            comparison = compare.compare(
                classes,
                owners,
                (stable, scored[rs.STABLE]),
                (canary_version, scored[rs.CANARY]),
                thresholds,
            )
        except (ValueError, ClientError) as error:  # EvaluationError is a ValueError
            raise RolloutError(f"cannot evaluate: {error}") from None
        report = compare.write_report(report_dir, comparison, target.model, folder)
        summary = (
            f"canary v{canary_version} {comparison['canary']['accuracy']:.4f} vs stable "
            f"v{stable} {comparison['stable']['accuracy']:.4f} "
            f"({100 * comparison['delta']:+.2f} points, McNemar p = "
            f"{comparison['mcnemar']['p_value']:.3g}); report {report}"
        )
        if not comparison["passed"]:
            raise RolloutError(
                f"gate failed, stable stays on version {stable}: "
                f"{'; '.join(comparison['reasons'])} ({summary})",
                exit_code=GATE_FAILED,
            )
        target.say(f"gate passed: {summary}")
        state, entry = _move(target, state, entry, {rs.STABLE: canary_version}, "promote")
        _wait(
            target, connected, labels_at({rs.STABLE: canary_version}), f"stable -> {canary_version}"
        )
    return f"promoted: stable {stable} -> {canary_version} (rollback target: version {stable})"


def rollback(target: Target, to: int | None) -> str:
    """Point stable (and every label on the same version) back at the previous stable."""
    with rs.locked(target.repo), _connect(target) as connected:
        state, entry = _read(target)
        current = entry.labels.get(rs.STABLE)
        version = to if to is not None else rollback_target(state, entry)
        if version is None:
            raise RolloutError(
                f"no earlier stable version of {target.model} in the history of "
                f"{rs.config_path(target.repo)}; name one with --to N"
            )
        if version == current:
            raise RolloutError(f"stable already points at version {version}")
        if version not in versions_on_disk(target):
            raise RolloutError(f"{target.repo / target.model} has no version {version}")
        state, entry = _bring_up(target, connected, state, entry, version)
        moves = {label: version for label, at in entry.labels.items() if at == current}
        state, entry = _move(target, state, entry, moves, "rollback")
        _wait(target, connected, labels_at(moves), f"{', '.join(sorted(moves))} -> {version}")
    return f"rolled back: {', '.join(sorted(moves))} {current} -> {version}"
