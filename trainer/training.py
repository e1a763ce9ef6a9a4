"""One training run: data -> tf.data -> model -> fit -> evaluate -> reports -> publish."""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import secrets
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from common.cli import OneLineError
from trainer import data as data_module
from trainer import gate

OPTIMIZERS = ("adam", "sgd", "rmsprop")
SCHEDULES = ("constant", "cosine", "exponential", "warmup_cosine")
# --schedule warmup_cosine: the rate rises linearly from 1/10 of --learning-rate over this
# fraction of all steps, then follows the cosine down to 1 % of it.
WARMUP_FRACTION = 0.1
AUGMENTATIONS = ("none", "flip", "light", "full")
BEST_CHECKPOINT = "best.keras"
CSV_LOG = "training_log.csv"
TENSORBOARD_DIR = "tensorboard"
METRICS_FILE = "metrics.json"
# Validation and test batches: no gradients, so their size changes only the speed (one call per
# 1,024 images instead of per 64).
EVALUATION_BATCH_SIZE = 1024
# --preset NAME: settings per model, applied to the options a user did not give. The networks
# stay what --model names. Measured by benchmarks/train_speed.py (docs/trainer.md, Benchmarks).
# The cnn's two recipes share their optimisation: a warm-up, then the whole cosine.
_CNN_OPTIMISATION = {"batch_size": 128, "learning_rate": 3e-3, "schedule": "warmup_cosine"}
PRESETS: dict[str, dict[str, dict]] = {
    "fast": {
        # Larger batches, a higher rate annealed to 1 %: fewer, cheaper steps to 0.98 (seed 1:
        # 0.9814 after 10 epochs; 8 epochs ended at 0.9781, batch 512 at 0.9796 after 10).
        "mlp": {"batch_size": 256, "learning_rate": 3e-3, "schedule": "cosine", "epochs": 10},
        # 0.99 in 2-3 epochs: the whole cosine within 3 epochs, and clean digits (augmentation
        # slows the first epochs: 0.9734 after one, 0.9864 without).
        "cnn": {**_CNN_OPTIMISATION, "epochs": 3, "augment": "none"},
    },
    # For 0.995: the cnn for longer, on shifted, rotated and zoomed digits.
    "accurate": {"cnn": {**_CNN_OPTIMISATION, "epochs": 20, "augment": "light"}},
}


class RunError(OneLineError):
    """A run that cannot proceed; the message is one line for the user. `exit_code` for the CLI."""

    exit_code = 2


@dataclass
class TrainConfig:
    """Every knob of a run; `python -m trainer train --help` documents each one."""

    dataset: str = "mnist"
    data_dir: Path | None = None
    image_size: tuple[int, int] | None = None
    channels: int | None = None
    test_split: float = 0.2
    download: bool = True
    model: str = "mlp"
    activation: str = "relu"
    weights: Path | None = None
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    schedule: str = "constant"
    decay_rate: float = 0.9
    clip_norm: float | None = None
    l2: float = 0.0
    label_smoothing: float = 0.0
    epochs: int = 20
    batch_size: int = 64  # the tutorial's; 0.9828 vs 0.9807 at 128 for the mlp (seed 1)
    validation_split: float = 0.2
    early_stopping: int = 0
    augment: str = "none"
    limit: int | None = None
    seed: int | None = None
    mixed_precision: bool = False
    preset: str | None = None
    # Batches per call into TensorFlow (Keras' steps_per_execution): the same updates in the
    # same order, without Keras' Python and a function call around every batch.
    steps_per_execution: int = 32
    run_dir: Path = Path("runs")
    model_repo: Path | None = None
    model_name: str | None = None
    min_accuracy: float | None = None
    max_regression: float = gate.DEFAULT_MAX_REGRESSION
    allow_regression: bool = False
    keep: int | None = None
    progress: str = "auto"

    def validate(self) -> None:
        """Reject inconsistent options before anything slow happens."""
        checks = [
            (self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}"),
            (self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}"),
            (self.steps_per_execution >= 1, "--steps-per-execution must be at least 1"),
            (0 < self.validation_split < 1, "--validation-split must lie strictly in (0, 1)"),
            (self.learning_rate > 0, "--learning-rate must be positive"),
            (0 < self.decay_rate <= 1, "--decay-rate must lie in (0, 1]"),
            (self.clip_norm is None or self.clip_norm > 0, "--clip-norm must be positive"),
            (self.l2 >= 0, "--l2 must not be negative"),
            (0 <= self.label_smoothing < 1, "--label-smoothing must lie in [0, 1)"),
            (self.early_stopping >= 0, "--early-stopping must not be negative"),
            (self.limit is None or self.limit >= 1, "--limit must be at least 1"),
            (self.keep is None or self.keep >= 1, "--keep must be at least 1"),
            (
                self.min_accuracy is None or 0 <= self.min_accuracy <= 1,
                "--min-accuracy must lie in [0, 1]",
            ),
            (
                0 <= self.max_regression <= 1,
                "--max-regression must lie in [0, 1]",
            ),
            (
                (self.model_repo is None) == (self.model_name is None),
                "--model-repo and --model-name go together",
            ),
            (
                self.keep is None or self.model_repo is not None,
                "--keep needs --model-repo",
            ),
            (
                not self.allow_regression or self.model_repo is not None,
                "--allow-regression needs --model-repo",
            ),
            (
                not (self.augment in ("flip", "full") and self.dataset == "mnist"),
                f"--augment {self.augment} mirrors images, which turns digits into other "
                "shapes; use --augment light for mnist",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise RunError(message)
        if self.model_name is not None and (
            not self.model_name or "/" in self.model_name or self.model_name.startswith(".")
        ):
            raise RunError(f"--model-name {self.model_name!r}: use a plain folder name")


@dataclass
class RunResult:
    metrics: dict
    run_dir: Path
    version: int | None = None
    version_path: Path | None = None
    pruned: list[int] = field(default_factory=list)


def apply_preset(config: TrainConfig, explicit: set[str] | frozenset = frozenset()) -> TrainConfig:
    """`config` with its preset's settings for `config.model`, except the fields in `explicit`
    (the options the user gave, which win)."""
    if config.preset is None:
        return config
    if config.preset not in PRESETS:
        raise RunError(f"--preset {config.preset!r}: choose one of {', '.join(PRESETS)}")
    settings = PRESETS[config.preset].get(config.model)
    if settings is None:
        models = " or ".join(PRESETS[config.preset])
        raise RunError(f"--preset {config.preset} is defined for --model {models}")
    return replace(config, **{key: value for key, value in settings.items() if key not in explicit})


def say(message: str) -> None:
    print(message, flush=True)


# The networks whose training oneDNN's CPU kernels speed up (convolutions).
ONEDNN_MODELS = ("cnn", "resnet", "transfer")


def use_onednn(model: str) -> None:
    """Turn on TensorFlow's oneDNN CPU kernels for a process that trains `model`; call before
    importing TensorFlow.

    TensorFlow's CUDA builds (this project's) leave them off. With them the cnn's training
    steps of an epoch of 48,000 digits took 21 CPU s instead of 41 on the 2-core machine (issue
    9). The mlp keeps the default kernels: 3.7 CPU s an epoch either way, and with oneDNN its
    seeded runs changed (--preset fast, seed 3: 0.9806 -> 0.9798, under the 0.98 bar).
    TF_ENABLE_ONEDNN_OPTS=0 in the environment keeps them off for every model.
    """
    if model in ONEDNN_MODELS:
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


def setup_runtime(config: TrainConfig) -> list:
    """Configure TensorFlow before it allocates anything; return the visible GPUs."""
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if config.mixed_precision and not gpus:
        raise RunError(
            "--mixed-precision needs a GPU and TensorFlow sees none; drop the flag on CPU"
        )
    for gpu in gpus:
        # Without growth TensorFlow reserves all GPU memory up front, starving other processes.
        tf.config.experimental.set_memory_growth(gpu, True)
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    if config.seed is not None:
        keras.utils.set_random_seed(config.seed)
        tf.config.experimental.enable_op_determinism()
    return gpus


def make_pipeline(images, labels, num_classes, batch_size, shuffle, augment, seed):
    """tf.data over the arrays held as two tensors: shuffle indices, gather a batch at once.

    Shuffling indices (8 bytes each) and gathering each batch with one op costs the input
    pipeline one step per batch instead of one per image (a shuffle buffer of images
    copies every image through it, and refills all of it at every epoch's start).
    """
    import tensorflow as tf

    all_images = tf.constant(images)
    all_labels = tf.constant(labels)
    dataset = tf.data.Dataset.range(len(labels))
    if shuffle:
        dataset = dataset.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    augmenter = _augmenter(augment, seed) if shuffle else None

    def prepare(indices):
        # Pixels stay 0..255: the model's own Rescaling layer scales them, as in serving.
        pixels = tf.cast(tf.gather(all_images, indices), tf.float32)
        if augmenter is not None:
            pixels = augmenter(pixels)
        return pixels, tf.one_hot(tf.gather(all_labels, indices), num_classes)

    return dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def _augmenter(augment: str, seed: int | None):
    """A function of a float batch [N, H, W, C], or None for `none`."""
    if augment == "none":
        return None
    import keras

    flip = keras.layers.RandomFlip("horizontal", seed=seed) if augment in ("flip", "full") else None
    shift = augment in ("light", "full")

    def apply(pixels):
        if flip is not None:
            pixels = flip(pixels, training=True)
        if shift:
            pixels = _random_affine(pixels, seed)
        return pixels

    return apply


def _random_affine(pixels, seed: int | None, shift=0.08, degrees=9.0, zoom=0.08):
    """Shift by up to `shift` of the size, rotate by up to `degrees`, zoom by up to `zoom`.

    One bilinear resampling per image with the three composed, where Keras' RandomTranslation,
    RandomRotation and RandomZoom resample three times: the input pipeline of an epoch of
    48,000 digits took 3-4 s of CPU with those three layers, under 2 s with this.
    """
    import math

    import tensorflow as tf

    count = tf.shape(pixels)[0]
    height = tf.cast(tf.shape(pixels)[1], tf.float32)
    width = tf.cast(tf.shape(pixels)[2], tf.float32)

    def uniform(limit, offset):
        op_seed = None if seed is None else seed + offset
        return tf.random.uniform([count], -limit, limit, seed=op_seed)

    angle = uniform(math.radians(degrees), 0)
    scale = 1.0 + uniform(zoom, 1)
    shift_x, shift_y = uniform(shift, 2) * width, uniform(shift, 3) * height
    # The transform maps each output pixel to the input point it samples: rotate and scale
    # about the centre, then shift.
    a0, a1 = scale * tf.cos(angle), -scale * tf.sin(angle)
    b0, b1 = scale * tf.sin(angle), scale * tf.cos(angle)
    centre_x, centre_y = (width - 1) / 2, (height - 1) / 2
    a2 = centre_x - a0 * centre_x - a1 * centre_y - shift_x
    b2 = centre_y - b0 * centre_x - b1 * centre_y - shift_y
    zeros = tf.zeros_like(angle)
    transforms = tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=pixels, transforms=transforms, output_shape=tf.shape(pixels)[1:3],
        fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT",
    )  # fmt: skip


def build_optimizer(config: TrainConfig, steps_per_epoch: int):
    import keras

    options = {"learning_rate": learning_rate_schedule(config, steps_per_epoch)}
    if config.clip_norm is not None:
        options["clipnorm"] = config.clip_norm
    if config.optimizer == "adam":
        return keras.optimizers.Adam(**options)
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(momentum=0.9, nesterov=True, **options)
    if config.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(**options)
    raise RunError(f"unknown optimizer {config.optimizer!r}; choose {', '.join(OPTIMIZERS)}")


def learning_rate_schedule(config: TrainConfig, steps_per_epoch: int):
    """`--schedule` as Keras takes it: a constant rate, or a schedule of the step."""
    import keras

    learning_rate = config.learning_rate
    total_steps = steps_per_epoch * config.epochs
    if config.schedule == "cosine":
        learning_rate = keras.optimizers.schedules.CosineDecay(
            config.learning_rate, decay_steps=total_steps, alpha=0.01
        )
    elif config.schedule == "warmup_cosine":
        warmup_steps = max(1, round(total_steps * WARMUP_FRACTION))
        learning_rate = keras.optimizers.schedules.CosineDecay(
            config.learning_rate / 10, decay_steps=max(1, total_steps - warmup_steps),
            alpha=0.01, warmup_target=config.learning_rate, warmup_steps=warmup_steps,
        )  # fmt: skip
    elif config.schedule == "exponential":
        learning_rate = keras.optimizers.schedules.ExponentialDecay(
            config.learning_rate, decay_steps=steps_per_epoch, decay_rate=config.decay_rate
        )
    elif config.schedule != "constant":
        raise RunError(f"unknown schedule {config.schedule!r}; choose {', '.join(SCHEDULES)}")
    return learning_rate


def _progress_callbacks(config: TrainConfig):
    import keras

    class EpochLines(keras.callbacks.Callback):
        """One line per epoch: readable in CI logs, where a carriage-return bar is noise."""

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.monotonic()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            parts = [
                f"epoch {epoch + 1}/{config.epochs}",
                f"{time.monotonic() - self.started:.1f}s",
            ]
            parts += [f"{key} {value:.4f}" for key, value in logs.items() if key != "learning_rate"]
            say("  ".join(parts))

    interactive = config.progress == "bar" or (config.progress == "auto" and sys.stdout.isatty())
    if interactive:
        return 1, []
    return 0, [EpochLines()]


def _best_checkpoint(path: Path):
    """Keep the best epoch's weights by `val_accuracy` in memory; at the end, restore them and
    write them to `path` once.

    Keras' ModelCheckpoint writes a whole .keras archive at every better epoch (0.5 s of Python
    each for the MLP on the shared 2-core machine, py-spy) for a file whose last write is all
    that is read.
    """
    import keras

    class BestCheckpoint(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.best, self.weights = -math.inf, None

        def on_epoch_end(self, epoch, logs=None):
            accuracy = (logs or {}).get("val_accuracy")
            if accuracy is not None and accuracy > self.best:
                self.best, self.weights = accuracy, self.model.get_weights()

        def on_train_end(self, logs=None):
            if self.weights is not None:
                self.model.set_weights(self.weights)
            self.model.save(path)

    return BestCheckpoint()


def _tensorboard_callback(log_dir: Path):
    """Per-epoch scalars in TensorBoard's layout (train/ and validation/, `epoch_<metric>`).

    Keras' own TensorBoard callback needs the `tensorboard` package for `tf.summary.scalar`;
    `tf.summary.write` with the scalars plugin's metadata writes the same event records with
    TensorFlow alone, and `tensorboard --logdir` shows them as usual.
    """
    import keras
    import tensorflow as tf
    from tensorflow.core.framework import summary_pb2

    metadata = summary_pb2.SummaryMetadata()
    metadata.plugin_data.plugin_name = "scalars"

    class TensorBoardScalars(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.writers = {
                split: tf.summary.create_file_writer(str(log_dir / split))
                for split in ("train", "validation")
            }

        def on_epoch_end(self, epoch, logs=None):
            for key, value in (logs or {}).items():
                split = "validation" if key.startswith("val_") else "train"
                name = "epoch_" + key.removeprefix("val_")
                with self.writers[split].as_default():
                    tf.summary.write(name, tf.constant(float(value)), step=epoch, metadata=metadata)
            for writer in self.writers.values():
                writer.flush()

        def on_train_end(self, logs=None):
            for writer in self.writers.values():
                writer.close()

    return TensorBoardScalars()


def run(config: TrainConfig, callbacks: Sequence = ()) -> RunResult:
    """Train, evaluate, write reports to `config.run_dir`, and publish when a repo is given.

    `callbacks`: extra Keras callbacks, run after the trainer's own (benchmarks time epochs
    and measure test accuracy along the way with them). A run that fails removes the model
    folders it created and left empty (a failed first training of `models/fashion` must not
    leave an empty `models/fashion/` behind).
    """
    config.validate()
    created: list[Path] = []
    if config.model_repo is not None:
        created = _check_writable(Path(config.model_repo) / config.model_name)
    try:
        return _run(config, callbacks)
    except BaseException:
        for folder in created:  # deepest first
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty
        raise


def _run(config: TrainConfig, extra_callbacks: Sequence) -> RunResult:
    started = time.monotonic()
    dataset = data_module.load_dataset(
        config.dataset, data_dir=config.data_dir, image_size=config.image_size,
        channels=config.channels, test_split=config.test_split,
        seed=config.seed or 0, download=config.download,
    )  # fmt: skip
    split_seed = config.seed if config.seed is not None else secrets.randbelow(2**31)
    dataset = dataset.limited(config.limit, seed=split_seed)
    height, width, channels = dataset.input_shape
    say(
        f"data: {dataset.name} from {dataset.source}: {len(dataset.train_labels)} train, "
        f"{len(dataset.test_labels)} test, {height}x{width}x{channels}, "
        f"{dataset.num_classes} classes"
    )
    try:
        gate.check_data(dataset)
        if config.model_repo is not None:
            # Cheap checks against the reference's model_info.json, before hours of training.
            reference = _find_reference(config)
            if reference is not None:
                gate.check_compatible(
                    reference, config.model_name, dataset.input_shape, dataset.class_names
                )
    except gate.GateError as error:
        raise RunError(str(error), error.exit_code) from error

    import keras
    import tensorflow as tf

    from trainer import models, reports

    gpus = setup_runtime(config)
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)

    train_index, validation_index = data_module.stratified_split(
        dataset.train_labels, config.validation_split, split_seed
    )
    train_images = dataset.train_images[train_index]
    train_labels = dataset.train_labels[train_index]
    steps_per_epoch = math.ceil(len(train_labels) / config.batch_size)
    pipeline_seed = config.seed
    train_data = make_pipeline(
        train_images, train_labels, dataset.num_classes, config.batch_size,
        shuffle=True, augment=config.augment, seed=pipeline_seed,
    )  # fmt: skip
    validation_data = make_pipeline(
        dataset.train_images[validation_index], dataset.train_labels[validation_index],
        dataset.num_classes, EVALUATION_BATCH_SIZE, shuffle=False, augment="none", seed=None,
    )  # fmt: skip
    reports.save_samples(run_dir / "samples.png", train_images, train_labels, dataset.class_names)

    # Several GPUs: replicate with MirroredStrategy; otherwise the default (no-op) strategy.
    strategy = tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    with strategy.scope():
        try:
            model = models.build_model(
                config.model, dataset.input_shape, dataset.num_classes,
                activation=config.activation, l2=config.l2, weights=config.weights,
            )  # fmt: skip
        except ValueError as error:
            raise RunError(str(error)) from error
        model.compile(
            optimizer=build_optimizer(config, steps_per_epoch),
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
            metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
            # XLA makes these small models 1.5-4x slower on CPU; on GPUs it usually helps.
            jit_compile="auto" if gpus else False,
            steps_per_execution=config.steps_per_execution,
        )
    say(
        f"model: {config.model}, {model.count_params():,} parameters; training on "
        f"{len(train_labels)} examples, validating on {len(validation_index)}"
    )

    checkpoint = run_dir / BEST_CHECKPOINT
    verbose, progress = _progress_callbacks(config)
    callbacks = [
        _best_checkpoint(checkpoint),
        keras.callbacks.CSVLogger(str(run_dir / CSV_LOG)),
        _tensorboard_callback(run_dir / TENSORBOARD_DIR),
        *progress,
    ]
    if config.early_stopping:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_accuracy", mode="max", patience=config.early_stopping
            )
        )
    callbacks += extra_callbacks
    fit_started = time.monotonic()
    history = model.fit(
        train_data, validation_data=validation_data, epochs=config.epochs,
        callbacks=callbacks, verbose=verbose, shuffle=False,  # the pipeline shuffles
    )  # fmt: skip
    train_seconds = time.monotonic() - fit_started
    epochs_run = len(history.history["loss"])
    best_epoch = int(np.argmax(history.history["val_accuracy"])) + 1
    # The model now holds the best epoch's weights (the checkpoint's), which are evaluated and
    # published.

    test_data = make_pipeline(
        dataset.test_images, dataset.test_labels, dataset.num_classes, EVALUATION_BATCH_SIZE,
        shuffle=False, augment="none", seed=None,
    )  # fmt: skip
    test_loss, test_accuracy = model.evaluate(test_data, verbose=0)
    probabilities = model.predict(test_data, verbose=0)
    predictions = probabilities.argmax(axis=1)
    say(f"test: accuracy {test_accuracy:.4f}, loss {test_loss:.4f} (best epoch {best_epoch})")

    reports.save_curves(run_dir / "curves.png", history.history)
    confusion = reports.confusion_matrix(dataset.test_labels, predictions, dataset.num_classes)
    reports.save_confusion_matrix(
        run_dir / "confusion_matrix.png", confusion, dataset.class_names, split="test"
    )
    parameters = _parameters(config, split_seed)
    metrics = {
        "dataset": dataset.name,
        "model": config.model,
        "test_accuracy": float(test_accuracy),
        "test_loss": float(test_loss),
        "test_examples": len(dataset.test_labels),
        "per_class": reports.per_class_metrics(confusion, dataset.class_names),
        "confusion_matrix": confusion.tolist(),
        "epochs_run": epochs_run,
        "best_epoch": best_epoch,
        "best_val_accuracy": float(max(history.history["val_accuracy"])),
        "train_examples": len(train_labels),
        "validation_examples": len(validation_index),
        "train_seconds": round(train_seconds, 3),
        "samples_per_second": round(epochs_run * len(train_labels) / train_seconds, 1),
        "total_seconds": None,
        "parameters": model.count_params(),
        "training": parameters,
        "version": None,
        "published": False,
        "publish_refused": None,
        "comparison": None,
    }
    metrics_path = run_dir / METRICS_FILE
    result = RunResult(metrics=metrics, run_dir=run_dir)

    def write_metrics() -> None:
        metrics["total_seconds"] = round(time.monotonic() - started, 3)
        metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")

    if config.min_accuracy is not None and test_accuracy < config.min_accuracy:
        reason = (
            f"test accuracy {test_accuracy:.4f} is below --min-accuracy {config.min_accuracy}; "
            "nothing published"
        )
        metrics["publish_refused"] = reason
        write_metrics()
        raise RunError(reason, exit_code=3)

    if config.model_repo is not None:
        try:
            metrics["comparison"], refusal = _compare(config, dataset, predictions)
        except gate.GateError as error:
            metrics["publish_refused"] = str(error)
            write_metrics()
            raise RunError(str(error), error.exit_code) from error
        if refusal is not None:
            metrics["publish_refused"] = refusal
            write_metrics()
            raise RunError(refusal, exit_code=3)

        from trainer import export, publish

        info = export.model_info(
            dataset, config.model, metrics, parameters, library_versions(), model.count_params()
        )
        info["comparison"] = metrics["comparison"]
        warmup = export.warmup_images(dataset.test_images, dataset.test_labels)
        base = Path(config.model_repo) / config.model_name
        try:
            published = publish.publish(
                base,
                write=lambda folder: export.write_saved_model(
                    model, folder, dataset.class_names, config.model_name, info, warmup
                ),
                keep=config.keep,
                validate=export.check_complete,
            )
        except OSError as error:
            write_metrics()
            raise RunError(
                f"publishing into {base} failed ({error}); nothing published, the trained "
                f"model is in {checkpoint}",
                exit_code=1,
            ) from error
        metrics.update(version=published.version, published=True)
        result.version, result.version_path = published.version, published.path
        result.pruned = list(published.pruned)
        say(f"published: {published.path}")
        if published.cleaned:
            say(f"removed stale staging folders: {', '.join(published.cleaned)}")
        if published.pruned:
            say(f"pruned versions: {', '.join(map(str, published.pruned))}")
        if published.note:  # why pruning kept versions, or why the rollout state was not started
            say(f"note: {published.note}")
    write_metrics()
    say(f"reports: {run_dir}")
    return result


def _find_reference(config: TrainConfig) -> gate.Reference | None:
    """The reference version; with --allow-regression, None when none can be had."""
    try:
        return gate.find_reference(Path(config.model_repo), config.model_name)
    except gate.GateError as error:
        if config.allow_regression and error.exit_code != gate.REFUSED:
            return None
        raise


def _compare(config: TrainConfig, dataset, predictions: np.ndarray) -> tuple[dict, str | None]:
    """Evaluate the reference on this run's test split; the comparison and any refusal.

    The reference is looked up again: another publisher or a label move may have changed it
    while this run trained.
    """
    try:
        reference = gate.find_reference(Path(config.model_repo), config.model_name)
    except gate.GateError as error:
        if not config.allow_regression or error.exit_code == gate.REFUSED:
            raise
        say(f"gate: {error}; --allow-regression: publishing without a comparison")
        return {"reference_version": None, "error": str(error)}, None
    if reference is None:
        say(f"gate: {config.model_name} has no published version to compare with")
        return {"reference_version": None}, None
    gate.check_compatible(reference, config.model_name, dataset.input_shape, dataset.class_names)
    try:
        reference_accuracy = gate.evaluate(
            reference, config.model_name, dataset.test_images, dataset.test_labels,
            dataset.num_classes,
        )  # fmt: skip
    except gate.GateError as error:
        if config.allow_regression and error.exit_code != gate.REFUSED:
            say(f"gate: {error}; --allow-regression: publishing without a comparison")
            return {"reference_version": reference.version, "error": str(error)}, None
        raise
    accuracy = float(np.mean(predictions == dataset.test_labels))
    comparison, refusal = gate.compare(
        accuracy, reference_accuracy, reference, config.model_name, len(dataset.test_labels),
        config.max_regression, config.allow_regression,
    )  # fmt: skip
    if refusal is None:
        say(gate.summary(comparison, config.model_name))
    return comparison, refusal


def _check_writable(base: Path) -> list[Path]:
    """Fail before training, not after, when the model repository cannot take a version.

    Returns the folders it created, deepest first.
    """
    missing = [folder for folder in (base, *base.parents) if not folder.exists()]
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        for folder in missing:
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise RunError(f"--model-repo: cannot create {base} ({error.strerror})") from error
    if not os.access(base, os.W_OK | os.X_OK):
        raise RunError(f"--model-repo: {base} is not writable")
    return missing


def _parameters(config: TrainConfig, split_seed: int) -> dict:
    parameters = {key: value for key, value in asdict(config).items() if key != "progress"}
    parameters["split_seed"] = split_seed
    return json.loads(json.dumps(parameters, default=str))


def library_versions() -> dict:
    import keras
    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }
