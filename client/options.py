"""Typer option types shared by every command (`evaluate` included), with their defaults.

Use as `batch_size: BatchSizeOption = DEFAULT_BATCH_SIZE`. Defaults live here so that all
commands agree. The connection options (--server, --model, --version, --label, --signature,
--timeout, --retries, --retry-seconds) are added to a command by
`client.commands.common.connection_options`, never listed by hand.
"""

from __future__ import annotations

from typing import Annotated

import typer

from common.contract import SERVING_DEFAULT

DEFAULT_SERVER = "grpc://localhost:8500"
DEFAULT_MODEL = "mnist"
DEFAULT_SIGNATURE = SERVING_DEFAULT
DEFAULT_BATCH_SIZE = 64
DEFAULT_CONCURRENCY = 4
DEFAULT_PREPROCESS = "auto"
DEFAULT_TIMEOUT = 30.0
DEFAULT_RETRIES = 3
DEFAULT_RETRY_SECONDS = 60.0

ServerOption = Annotated[
    str,
    typer.Option(
        "--server",
        "-s",
        envvar="TFS_SERVER",
        help="Model server address; the scheme picks the transport: grpc://HOST:8500 (gRPC), "
        "http://HOST:8501 (REST), grpcs:// and https:// for TLS.",
    ),
]
ModelOption = Annotated[str, typer.Option("--model", "-m", help="Model name on the server.")]
VersionOption = Annotated[
    int | None,
    typer.Option(
        "--version", min=1, help="Model version to address (default: the server's latest)."
    ),
]
LabelOption = Annotated[
    str | None,
    typer.Option(
        "--label", help="Version label to address, e.g. stable or canary (not with --version)."
    ),
]
SignatureOption = Annotated[
    str, typer.Option("--signature", help="Signature to call; it must take one image input.")
]
BatchSizeOption = Annotated[
    int, typer.Option("--batch-size", "-b", min=1, max=65536, help="Images per predict request.")
]
ConcurrencyOption = Annotated[
    int, typer.Option("--concurrency", "-c", min=1, max=256, help="Predict requests in flight.")
]
PREPROCESS_CHOICES = ("auto", "mnist", "none")


def _preprocess_choice(value: str) -> str:
    if value not in PREPROCESS_CHOICES:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(PREPROCESS_CHOICES)}")
    return value


PreprocessOption = Annotated[
    str,
    typer.Option(
        "--preprocess",
        metavar="[auto|mnist|none]",
        callback=_preprocess_choice,
        help="none: resize to the model's input; mnist: invert dark-on-light, crop, scale to "
        "20 px and centre like MNIST; auto: mnist unless the image already is model-sized "
        "light-on-dark.",
    ),
]
TimeoutOption = Annotated[
    float, typer.Option("--timeout", min=0.001, help="Deadline of each request, in seconds.")
]
RetriesOption = Annotated[
    int,
    typer.Option(
        "--retries",
        min=0,
        max=20,
        help="Extra attempts when the server is unavailable (exponential backoff with jitter).",
    ),
]
RetrySecondsOption = Annotated[
    float,
    typer.Option(
        "--retry-seconds",
        min=0.0,
        envvar="TFS_RETRY_SECONDS",
        help="How long a batch is retried while the server is unavailable or busy, e.g. while "
        "it restarts (0: a few quick retries only). Once a batch has waited this long, the "
        "others stop waiting until the server answers again.",
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print JSON for machines instead of a table.")
]
DEFAULT_MIN_CONFIDENCE = 0.5  # client.scoring.DEFAULT_MIN_CONFIDENCE (scoring loads numpy)
DEFAULT_INPUT_CHECK = "auto"
INPUT_CHECK_CHOICES = ("auto", "glyph", "off")


def _input_check_choice(value: str) -> str:
    if value not in INPUT_CHECK_CHOICES:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(INPUT_CHECK_CHOICES)}")
    return value


MinConfidenceOption = Annotated[
    float,
    typer.Option(
        "--min-confidence",
        min=0.0,
        max=1.0,
        help="Flag predictions whose probability is below this in the warning column (0: never).",
    ),
]
InputCheckOption = Annotated[
    str,
    typer.Option(
        "--input-check",
        metavar="[auto|glyph|off]",
        callback=_input_check_choice,
        help="Flag inputs unlike the training data in the warning column. glyph: after "
        "preprocessing, the image must look like one light glyph on a dark background (MNIST); "
        "auto: glyph for digit models (one channel, classes 0-9); off: no input check.",
    ),
]
