"""`python -m client rollout ...`: move `stable` and `canary` in the repository's models.config.

Every command reads and rewrites `<model repo>/models.config` on this machine (so it needs write
access to the model repository) and then waits until every `--server` shows the result. Exit
codes: 0 done, 1 a server did not show the step in time or could not be asked, 2 bad options or
state, 3 `promote`'s gate refused (nothing moved).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from client import options
from client.options import DEFAULT_MODEL, DEFAULT_SERVER

DEFAULT_REPO = "models"
DEFAULT_TIMEOUT = 300.0

app = typer.Typer(
    name="rollout",
    help="Canary, promote and roll back model versions with the stable/canary labels of "
    "MODEL_REPO/models.config, waiting until every server shows each step.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)

RepoOption = Annotated[
    Path,
    typer.Option(
        "--model-repo",
        envvar="MODEL_REPO",
        file_okay=False,
        help="The model repository (holds <model>/<version>/ and models.config), as this "
        "machine sees it.",
    ),
]
ModelOption = Annotated[str, typer.Option("--model", "-m", help="Model name.")]
ServersOption = Annotated[
    list[str] | None,
    typer.Option(
        "--server",
        "-s",
        envvar="TFS_SERVER",
        help=f"A server to wait for and ask (repeat for each replica; default {DEFAULT_SERVER}; "
        "TFS_SERVER may list several, space-separated). promote evaluates through the first.",
    ),
]
ResolveOption = Annotated[
    bool,
    typer.Option(
        "--each-address",
        envvar="TFS_EACH_ADDRESS",
        help="Ask every address each --server host name resolves to (the pods behind a "
        "headless Kubernetes Service), not just one.",
    ),
]
TimeoutOption = Annotated[
    float,
    typer.Option(
        "--timeout",
        min=0.0,
        help="Seconds to wait until every server shows a step (a config poll interval or more).",
    ),
]


def _target(repo: Path, model: str, servers: list[str] | None, each: bool, timeout: float):
    from client.rollout.servers import expand
    from client.rollout.steps import Target

    try:
        addresses = expand(servers or [DEFAULT_SERVER], each)
    except ValueError as error:
        _fail(str(error), 2)
    return Target(repo, model, addresses, timeout, say=lambda line: print(line, flush=True))


def _fail(message: str, exit_code: int) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(exit_code)


def _run(step, *args, **kwargs):
    from client.rollout.steps import RolloutError

    try:
        return step(*args, **kwargs)
    except RolloutError as error:
        _fail(str(error), error.exit_code)


@app.command()
def init(
    model_repo: RepoOption = Path(DEFAULT_REPO),
    model: ModelOption = DEFAULT_MODEL,
    version: Annotated[
        int | None, typer.Option("--version", min=1, help="Version to start on (default: newest).")
    ] = None,
    base_path: Annotated[
        str | None,
        typer.Option(
            "--base-path",
            help="The model folder as the servers see it (default: its absolute path here; "
            "the servers must see the repository at the same path).",
        ),
    ] = None,
) -> None:
    """Start the rollout state of a model published before it existed: stable and canary on one
    version. A model's first publish does this itself; a model that has state is left alone.

    Example: python -m client rollout init --model-repo models --model mnist
    """
    from client.rollout import steps

    target = _target(model_repo, model, None, False, 0.0)
    print(_run(steps.init, target, version, base_path))


@app.command()
def status(
    model_repo: RepoOption = Path(DEFAULT_REPO),
    model: ModelOption = DEFAULT_MODEL,
    server: ServersOption = None,
    each_address: ResolveOption = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Versions on disk, labels and pins in models.config, and what each server reports.

    Example: python -m client rollout status --server http://localhost:8501
    """
    from client.rollout import steps

    document = _run(steps.status, _target(model_repo, model, server, each_address, 0.0))
    if json_output:
        print(json.dumps(document, indent=2))
        return
    labels = ", ".join(f"{k} -> {v}" for k, v in sorted(document["labels"].items()))
    pins = document["pins"]
    print(f"{document['model']} in {document['config']} (base path {document['base_path']})")
    print(f"  on disk:  {', '.join(map(str, document['on_disk'])) or 'nothing'}")
    print(f"  labels:   {labels or 'none'}")
    if pins is None:
        print(f"  policy:   {document['policy']} (no pins: 'rollout canary N' pins versions)")
    else:
        print(f"  pinned:   {', '.join(map(str, pins))}")
    print(f"  rollback: {document['rollback_to'] or 'no earlier stable'}")
    for item in document["servers"]:
        if item["error"]:
            print(f"  {item['server']}: {item['error']}")
            continue
        versions = ", ".join(f"{v} {s}" for v, s in item["versions"].items()) or "no versions"
        resolved = ", ".join(f"{k} -> {v}" for k, v in sorted(item["labels"].items()))
        print(f"  {item['server']}: {versions}; {resolved}")
        for version, error in item["load_errors"].items():
            print(f"    version {version}: {error}")


@app.command()
def canary(
    version: Annotated[int, typer.Argument(min=1, help="The version to point canary at.")],
    model_repo: RepoOption = Path(DEFAULT_REPO),
    model: ModelOption = DEFAULT_MODEL,
    server: ServersOption = None,
    each_address: ResolveOption = False,
    timeout: TimeoutOption = DEFAULT_TIMEOUT,
) -> None:
    """Pin VERSION, wait until every server has it AVAILABLE, then point canary at it.

    Example: python -m client rollout canary 3 --server http://localhost:8501
    """
    from client.rollout import steps

    target = _target(model_repo, model, server, each_address, timeout)
    print(_run(steps.canary, target, version))


@app.command()
def promote(
    images: Annotated[
        Path,
        typer.Argument(
            exists=True, file_okay=False, help="Labelled folder: one sub-folder per class."
        ),
    ],
    model_repo: RepoOption = Path(DEFAULT_REPO),
    model: ModelOption = DEFAULT_MODEL,
    server: ServersOption = None,
    each_address: ResolveOption = False,
    timeout: TimeoutOption = DEFAULT_TIMEOUT,
    report_dir: Annotated[
        Path,
        typer.Option(
            "--report-dir", envvar="ROLLOUT_REPORT_DIR", help="Where report.json and report.md go."
        ),
    ] = Path("reports/promote"),
    min_delta: Annotated[
        float,
        typer.Option(
            "--min-delta",
            help="Canary accuracy minus stable accuracy must be at least this (0.01: one point "
            "better; -0.005: half a point worse is fine).",
        ),
    ] = 0.0,
    max_regression: Annotated[
        float,
        typer.Option(
            "--max-regression",
            min=0.0,
            help="No class may lose more than this of its accuracy.",
        ),
    ] = 0.05,
    alpha: Annotated[
        float,
        typer.Option(
            "--alpha",
            min=0.0,
            max=1.0,
            help="Significance level of McNemar's test: a canary significantly worse than "
            "stable is refused.",
        ),
    ] = 0.05,
    require_significance: Annotated[
        bool,
        typer.Option(
            "--require-significance",
            help="Also refuse unless the canary is significantly better (McNemar p < --alpha).",
        ),
    ] = False,
    batch_size: options.BatchSizeOption = options.DEFAULT_BATCH_SIZE,
    concurrency: options.ConcurrencyOption = options.DEFAULT_CONCURRENCY,
    request_timeout: Annotated[
        float, typer.Option("--request-timeout", min=0.001, help="Seconds per predict request.")
    ] = 30.0,
) -> None:
    """Evaluate canary against stable on IMAGES through the server, write a side-by-side report
    and point stable at the canary's version only if the gate passes (else exit 3, nothing moves).

    Example: python -m client rollout promote data/mnist-test --server grpc://localhost:8500
    """
    from client.rollout import compare, steps

    thresholds = compare.Thresholds(min_delta, max_regression, alpha, require_significance)
    target = _target(model_repo, model, server, each_address, timeout)
    print(
        _run(
            steps.promote,
            target,
            images,
            report_dir,
            thresholds,
            batch_size=batch_size,
            concurrency=concurrency,
            request_timeout=request_timeout,
        )
    )


@app.command()
def rollback(
    model_repo: RepoOption = Path(DEFAULT_REPO),
    model: ModelOption = DEFAULT_MODEL,
    server: ServersOption = None,
    each_address: ResolveOption = False,
    timeout: TimeoutOption = DEFAULT_TIMEOUT,
    to: Annotated[
        int | None,
        typer.Option("--to", min=1, help="Version to go back to (default: the previous stable)."),
    ] = None,
) -> None:
    """Point stable (and canary, where it shares stable's version) back at the previous stable,
    which the history lines of models.config name.

    Example: python -m client rollout rollback --server http://localhost:8501
    """
    from client.rollout import steps

    target = _target(model_repo, model, server, each_address, timeout)
    print(_run(steps.rollback, target, to))
