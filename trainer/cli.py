"""`python -m trainer`: train and publish (`train`), write data sets as PNGs (`export-images`).

TensorFlow is imported inside the commands, never at module level, so `--help` stays instant.
Exit codes: 0 success, 1 unexpected failure, 2 bad options or data, 3 publishing refused (below
--min-accuracy, worse than the reference version, or a different model under the same name).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from common.cli import OneLineErrors
from trainer.data import SPEC_HELP
from trainer.gate import DEFAULT_MAX_REGRESSION
from trainer.models import MODEL_HELP

# rich_markup_mode=None: click's plain help, which wraps every description in full at any
# width (rich's boxed panels cut them off and took 206 lines at 80 columns).
app = typer.Typer(
    help="Train image classifiers and publish them as versioned SavedModels for TF Serving.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    cls=OneLineErrors,
)


def fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


_VERBOSE = {"on": False}


@app.callback()
def _options(
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="Show TensorFlow's own start-up and C++ log lines (oneDNN, CUDA probing), "
            "hidden by default.",
        ),
    ] = False,
) -> None:
    _VERBOSE["on"] = verbose


def _quiet_tensorflow(model: str) -> None:
    """Import TensorFlow now, with oneDNN for a convolutional `model` (training.use_onednn),
    its start-up noise filtered unless --verbose (common.quiet)."""
    from common import quiet
    from trainer.training import use_onednn

    use_onednn(model)
    quiet.import_tensorflow(_VERBOSE["on"])


DatasetOption = Annotated[str, typer.Option("--dataset", help=f"Data set: {SPEC_HELP}.")]
DataDirOption = Annotated[
    Path | None,
    typer.Option(
        help="Folder with a local copy of mnist/fashion_mnist (the four IDX files, or Keras' "
        "mnist.npz, there or in a sub-folder named after the data set). Default: "
        "$TRAINER_DATA_DIR, then $MNIST_DIR (mnist), /usr/share/datasets/fashion-mnist "
        "(fashion_mnist), Keras' cache ~/.keras/datasets, then Keras' download.",
        file_okay=True,
    ),
]
ImageSizeOption = Annotated[
    str | None,
    typer.Option(
        help="Resize images to N or HEIGHTxWIDTH pixels (folder: data sets of mixed sizes need "
        "it). Default: keep the data set's size."
    ),
]
ChannelsOption = Annotated[
    int | None,
    typer.Option(
        help="1 (grayscale) or 3 (RGB). Default: the data set's (folders: 1 if all gray)."
    ),
]
TestSplitOption = Annotated[
    float,
    typer.Option(
        help="folder: data sets without train/ and test/ sub-folders: fraction of each class "
        "held out as the test split."
    ),
]
DownloadOption = Annotated[
    bool,
    typer.Option(
        "--download/--no-download",
        help="Let Keras download mnist/fashion_mnist when no local copy exists.",
    ),
]


@app.command()
def train(
    context: typer.Context,
    dataset: DatasetOption = "mnist",
    data_dir: DataDirOption = None,
    image_size: ImageSizeOption = None,
    channels: ChannelsOption = None,
    test_split: TestSplitOption = 0.2,
    download: DownloadOption = True,
    model: Annotated[str, typer.Option(help=f"Architecture. {MODEL_HELP}.")] = "mlp",
    activation: Annotated[
        str, typer.Option(help="Hidden-layer activation: relu or leaky_relu.")
    ] = "relu",
    weights: Annotated[
        Path | None,
        typer.Option(
            help="transfer only: MobileNetV2 (alpha 0.35, no top) weights file. Without it the "
            "backbone starts from random weights; nothing is ever downloaded.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    epochs: Annotated[int, typer.Option(help="Maximum number of epochs.")] = 20,
    batch_size: Annotated[
        int, typer.Option(help="Examples per gradient step (64: the tutorial's setting).")
    ] = 64,
    optimizer: Annotated[
        str, typer.Option(help="adam, sgd (Nesterov momentum 0.9) or rmsprop.")
    ] = "adam",
    learning_rate: Annotated[float, typer.Option(help="Initial learning rate.")] = 1e-3,
    schedule: Annotated[
        str,
        typer.Option(
            help="Learning-rate schedule: constant, cosine (decays to 1% over all epochs), "
            "exponential (times --decay-rate each epoch) or warmup_cosine (rises from 1/10 of "
            "--learning-rate over the first 10% of steps, then cosine to 1%)."
        ),
    ] = "constant",
    decay_rate: Annotated[
        float, typer.Option(help="Per-epoch factor of --schedule exponential.")
    ] = 0.9,
    clip_norm: Annotated[
        float | None, typer.Option(help="Clip each gradient to this L2 norm. Default: no clipping.")
    ] = None,
    l2: Annotated[float, typer.Option(help="L2 weight penalty on every kernel (0: none).")] = 0.0,
    label_smoothing: Annotated[float, typer.Option(help="Label smoothing in [0, 1).")] = 0.0,
    validation_split: Annotated[
        float,
        typer.Option(help="Fraction of the training examples (per class) held out for validation."),
    ] = 0.2,
    early_stopping: Annotated[
        int,
        typer.Option(
            help="Stop after this many epochs without a better val_accuracy (0: never stop)."
        ),
    ] = 0,
    augment: Annotated[
        str,
        typer.Option(
            help="none; flip (random horizontal flips); light (random shifts, rotations up to "
            "~9 degrees, zoom); full (light and flip). Flips are refused for mnist: a mirrored "
            "digit is another shape."
        ),
    ] = "none",
    limit: Annotated[
        int | None,
        typer.Option(
            help="Train on a random subset of N training examples (drawn with --seed); the test "
            "split is cut to the same fraction (e.g. 6000 of MNIST's 60000 -> 1000 test images)."
        ),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            help="Seed for subsets, splits, initialisation and shuffling; also turns on "
            "TensorFlow's op determinism, so the same command gives the same model."
        ),
    ] = None,
    mixed_precision: Annotated[
        bool, typer.Option(help="float16 compute with float32 weights; needs a GPU.")
    ] = False,
    preset: Annotated[
        str | None,
        typer.Option(
            help="fast: bigger batches, a higher rate and a cosine schedule for the options "
            "not given (values: docs/trainer.md); accurate (--model cnn only): a longer run "
            "with augmentation, for 0.995 on mnist. The network stays --model's."
        ),
    ] = None,
    steps_per_execution: Annotated[
        int,
        typer.Option(
            help="Batches per call into TensorFlow: the same updates as 1 (Keras' default), "
            "without its per-batch overhead."
        ),
    ] = 32,
    run_dir: Annotated[
        Path | None,
        typer.Option(
            help="Where reports go: samples.png, curves.png, confusion_matrix.png, "
            "metrics.json, best.keras, training_log.csv, tensorboard/. "
            "Default: runs/<UTC time>-<dataset>-<model>."
        ),
    ] = None,
    model_repo: Annotated[
        Path | None,
        typer.Option(
            help="Model repository to publish into (TF Serving's --model_base_path parent)."
        ),
    ] = None,
    model_name: Annotated[
        str | None,
        typer.Option(help="Publish as MODEL_REPO/MODEL_NAME/<next version>/ (needs --model-repo)."),
    ] = None,
    min_accuracy: Annotated[
        float | None,
        typer.Option(help="Refuse to publish below this test accuracy (exit code 3)."),
    ] = None,
    max_regression: Annotated[
        float,
        typer.Option(
            help="Refuse to publish (exit code 3) a model whose test accuracy is more than this "
            "below the repository's reference version (the one labelled stable in "
            "MODEL_REPO/models.config, else the newest), both measured on this run's test split."
        ),
    ] = DEFAULT_MAX_REGRESSION,
    allow_regression: Annotated[
        bool,
        typer.Option(
            "--allow-regression",
            help="Publish even when the model is worse than the reference version (the "
            "comparison is still printed and recorded). A different input shape or different "
            "class names are refused all the same.",
        ),
    ] = False,
    keep: Annotated[
        int | None,
        typer.Option(help="After publishing, delete all but the newest N versions."),
    ] = None,
    progress: Annotated[
        str,
        typer.Option(
            help="auto (a bar on a terminal, one line per epoch otherwise), bar or lines."
        ),
    ] = "auto",
) -> None:
    """Train a classifier, write reports, and publish it as the next SavedModel version."""
    from datetime import UTC, datetime

    from trainer.data import DatasetError, parse_image_size
    from trainer.models import ACTIVATIONS, MODEL_NAMES
    from trainer.training import (
        AUGMENTATIONS,
        OPTIMIZERS,
        SCHEDULES,
        RunError,
        TrainConfig,
        apply_preset,
        run,
    )

    choices = {
        "--model": (model, MODEL_NAMES),
        "--activation": (activation, ACTIVATIONS),
        "--optimizer": (optimizer, OPTIMIZERS),
        "--schedule": (schedule, SCHEDULES),
        "--augment": (augment, AUGMENTATIONS),
        "--progress": (progress, ("auto", "bar", "lines")),
    }
    for flag, (value, allowed) in choices.items():
        if value not in allowed:
            raise fail(f"{flag} {value!r}: choose one of {', '.join(allowed)}")
    try:
        size = parse_image_size(image_size)
    except DatasetError as error:
        raise fail(str(error)) from None
    if run_dir is None:
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        run_dir = Path("runs") / f"{stamp}-{dataset.replace(':', '_').replace('/', '_')}-{model}"
    config = TrainConfig(
        dataset=dataset, data_dir=data_dir, image_size=size, channels=channels,
        test_split=test_split, download=download, model=model, activation=activation,
        weights=weights, optimizer=optimizer, learning_rate=learning_rate, schedule=schedule,
        decay_rate=decay_rate, clip_norm=clip_norm, l2=l2, label_smoothing=label_smoothing,
        epochs=epochs, batch_size=batch_size, validation_split=validation_split,
        early_stopping=early_stopping, augment=augment, limit=limit, seed=seed,
        mixed_precision=mixed_precision, run_dir=run_dir, model_repo=model_repo,
        model_name=model_name, min_accuracy=min_accuracy, max_regression=max_regression,
        allow_regression=allow_regression, keep=keep, progress=progress, preset=preset,
        steps_per_execution=steps_per_execution,
    )  # fmt: skip
    # The options on the command line (or from the environment), which a preset leaves alone.
    # By name: typer vendors its own click, whose ParameterSource is not importable publicly.
    given = {
        name for name in context.params if context.get_parameter_source(name).name != "DEFAULT"
    }
    try:
        config = apply_preset(config, explicit=given)
        config.validate()
    except RunError as error:
        raise fail(str(error), error.exit_code) from None
    _quiet_tensorflow(config.model)
    try:
        run(config)
    except RunError as error:
        raise fail(str(error), error.exit_code) from None
    except DatasetError as error:
        raise fail(str(error)) from None
    except KeyboardInterrupt:
        raise fail("interrupted", 130) from None


@app.command("export-images")
def export_images_command(
    out: Annotated[Path, typer.Option(help="Output folder; gets one sub-folder per class.")],
    dataset: DatasetOption = "mnist",
    split: Annotated[str, typer.Option(help="train or test.")] = "test",
    limit: Annotated[
        int | None, typer.Option(help="Write only the first N images of the split.")
    ] = None,
    data_dir: DataDirOption = None,
    image_size: ImageSizeOption = None,
    channels: ChannelsOption = None,
    test_split: TestSplitOption = 0.2,
    download: DownloadOption = True,
    seed: Annotated[int, typer.Option(help="Seed of the folder: data sets' test split.")] = 0,
) -> None:
    """Write a data set split as OUT/<class name>/<index>.png (index zero-padded, e.g. 00042)."""
    import time

    from common import quiet

    quiet.configure(_VERBOSE["on"])  # only a Keras download imports TensorFlow here

    from trainer.data import DatasetError, load_dataset, parse_image_size
    from trainer.images import export_images

    if split not in ("train", "test"):
        raise fail(f"--split {split!r}: choose train or test")
    if limit is not None and limit < 1:
        raise fail("--limit must be at least 1")
    started = time.monotonic()
    try:
        data = load_dataset(
            dataset, data_dir=data_dir, image_size=parse_image_size(image_size),
            channels=channels, test_split=test_split, seed=seed, download=download,
        )  # fmt: skip
        images, labels = data.split(split)
    except DatasetError as error:
        raise fail(str(error)) from None
    try:
        written = export_images(images, labels, data.class_names, out, limit=limit)
    except DatasetError as error:
        raise fail(str(error)) from None
    except OSError as error:
        raise fail(f"--out {out}: cannot write ({error})") from None
    total = sum(written.values())
    typer.echo(
        f"wrote {total} PNGs of {data.name} {split} into {out} "
        f"({len(written)} classes, {time.monotonic() - started:.1f}s)"
    )
