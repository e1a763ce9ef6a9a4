"""The publishing gate: data fit to train on, and a new model no worse than the one it replaces.

Before a version is published, the repository's reference version is found (the version the
`stable` label points at when `<repo>/models.config` holds one for this model, else the newest
version) and evaluated on this run's own test split, so both models are measured on the same
images whatever `--limit`, seed or data changed. A model that is worse by more than
`--max-regression` is refused unless the user passes `--allow-regression`; one whose input shape
or class names differ from the reference's is refused always (it is a different model and
belongs under another `--model-name`).

TensorFlow is imported only by `evaluate`; the rest is numpy, JSON and protobuf (the rollout
state file is read by `common.rollout_state`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common import contract, rollout_state
from common.cli import OneLineError
from trainer import publish

# The rollout state beside the models: TF Serving's ModelServerConfig, protobuf text format.
CONFIG_FILE = rollout_state.CONFIG_FILE
STABLE_LABEL = rollout_state.STABLE
# Absolute test accuracy a new model may lose against the reference: 0.5 points, 50 of
# MNIST's 10,000 test images. The same command with the same seed gives the same model, so a
# re-run compares equal; other seeds move a small model's accuracy by a few tenths of a point.
DEFAULT_MAX_REGRESSION = 0.005
EVALUATION_BATCH = 256
REFUSED = 3  # the CLI's exit code for "nothing published"
DIFFERENT_MODEL = (
    "; a different model belongs under another --model-name, nothing published "
    "(--allow-regression does not change this)"
)


class GateError(OneLineError):
    """Publishing refused or impossible; one line for the user, and the CLI's exit code."""

    exit_code = REFUSED


@dataclass(frozen=True)
class Reference:
    """The published version a new model is compared with."""

    version: int
    path: Path
    chosen_by: str  # "stable label" or "newest version"
    class_names: tuple[str, ...] | None  # from assets.extra/model_info.json, when present
    input_shape: tuple[int, ...] | None

    def describe(self, model_name: str) -> str:
        return f"version {self.version} of {model_name} ({self.chosen_by})"


def check_data(dataset) -> None:
    """Refuse data no classifier should be trained on: one class, a class without examples."""
    names = dataset.class_names
    if len(names) < 2:
        which = f" ({', '.join(map(repr, names))})" if names else ""
        raise GateError(
            f"{dataset.name}: {len(names)} class{which}; a classifier needs at least two",
            exit_code=2,
        )
    for split, labels in (("training", dataset.train_labels), ("test", dataset.test_labels)):
        counts = np.bincount(np.asarray(labels, np.int64), minlength=len(names))
        empty = [names[index] for index in np.flatnonzero(counts == 0)]
        if empty:
            shown = ", ".join(repr(name) for name in empty[:5])
            more = f" and {len(empty) - 5} more" if len(empty) > 5 else ""
            subject = "class" if len(empty) == 1 else "classes"
            verb = "has" if len(empty) == 1 else "have"
            hint = (
                "; add some, or raise --limit or --test-split"
                if split == "test"
                else "; add some, or raise --limit"
            )
            raise GateError(
                f"{dataset.name}: {subject} {shown}{more} {verb} no {split} examples "
                f"({len(labels)} {split} examples in all){hint}",
                exit_code=2,
            )


def stable_version(repo: Path, model_name: str) -> int | None:
    """The version `<repo>/models.config` labels `stable` for `model_name`, if it says one."""
    try:
        state = rollout_state.read(repo)
    except rollout_state.StateError as error:
        message = " ".join(str(error).split())
        raise GateError(
            f"{message}: not a readable TF Serving ModelServerConfig; fix it, or pass "
            "--allow-regression to publish without a comparison",
            exit_code=2,
        ) from error
    entry = state.model(model_name) if state else None
    if entry is None:
        return None
    return entry.labels.get(STABLE_LABEL)


def find_reference(repo: Path, model_name: str) -> Reference | None:
    """The version a new `model_name` is compared with, or None for a first publish."""
    base = Path(repo) / model_name
    folders = publish.version_folders(base)
    stable = stable_version(repo, model_name)
    if stable is not None:
        if stable not in folders:
            raise GateError(
                f"{Path(repo) / CONFIG_FILE} labels version {stable} of {model_name} "
                f"{STABLE_LABEL!r}, but {base} has no version {stable}; fix the label, or pass "
                "--allow-regression to publish without a comparison",
                exit_code=2,
            )
        version, chosen_by = stable, f"{STABLE_LABEL} label in {CONFIG_FILE}"
    elif folders:
        version, chosen_by = max(folders), "newest version"
    else:
        return None
    path = folders[version]
    class_names = input_shape = None
    info_path = path / contract.ASSETS_EXTRA / contract.MODEL_INFO_FILE
    if info_path.is_file():
        try:
            info = json.loads(info_path.read_text())
        except (OSError, ValueError) as error:
            raise GateError(
                f"{info_path}: unreadable ({error}); pass --allow-regression to publish "
                "without a comparison",
                exit_code=2,
            ) from error
        if isinstance(info.get("class_names"), list):
            class_names = tuple(str(name) for name in info["class_names"])
        if isinstance(info.get("input_shape"), list):
            input_shape = tuple(int(size) for size in info["input_shape"])
    return Reference(version, path, chosen_by, class_names, input_shape)


def _shape(shape: Sequence[int]) -> str:
    return "x".join(str(size) for size in shape)


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(names[:12])
    return f"{len(names)} classes ({shown}{', ...' if len(names) > 12 else ''})"


def check_compatible(
    reference: Reference,
    model_name: str,
    input_shape: Sequence[int],
    class_names: Sequence[str],
) -> None:
    """Refuse a model that takes other images or answers with other classes than the reference."""
    suffix = DIFFERENT_MODEL
    if reference.input_shape is not None and tuple(reference.input_shape) != tuple(input_shape):
        raise GateError(
            f"{reference.describe(model_name)} takes {_shape(reference.input_shape)} images, "
            f"this model {_shape(input_shape)}{suffix}"
        )
    if reference.class_names is not None and tuple(reference.class_names) != tuple(class_names):
        raise GateError(
            f"{reference.describe(model_name)} has {_names(reference.class_names)}, this model "
            f"{_names(list(class_names))}{suffix}"
        )


def evaluate(
    reference: Reference, model_name: str, images: np.ndarray, labels: np.ndarray, num_classes: int
) -> float:
    """The reference's accuracy on `images`, through its `serving_default` signature."""
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(reference.path))
        signature = loaded.signatures[contract.SERVING_DEFAULT]
        spec = signature.structured_input_signature[1][contract.IMAGES_INPUT]
        output = signature.structured_outputs[contract.PROBABILITIES]
    except Exception as error:  # any failure to load means "cannot compare"
        message = " ".join(str(error).split())[:300]
        raise GateError(
            f"cannot evaluate {reference.describe(model_name)} at {reference.path} "
            f"({type(error).__name__}: {message}); pass --allow-regression to publish without "
            "a comparison",
            exit_code=2,
        ) from error
    # Without model_info.json the signature is the only word on shape and class count.
    accepted = spec.shape.as_list()[1:]
    wanted = list(images.shape[1:])
    if len(accepted) != len(wanted) or any(
        size is not None and size != want for size, want in zip(accepted, wanted, strict=True)
    ):
        shown = _shape(["?" if size is None else size for size in accepted])
        raise GateError(
            f"{reference.describe(model_name)} takes {shown} images, this model "
            f"{_shape(wanted)}{DIFFERENT_MODEL}"
        )
    width = output.shape.as_list()[-1]
    if width is not None and width != num_classes:
        raise GateError(
            f"{reference.describe(model_name)} answers with {width} classes, this model with "
            f"{num_classes}{DIFFERENT_MODEL}"
        )
    correct = 0
    for start in range(0, len(labels), EVALUATION_BATCH):
        batch = tf.constant(images[start : start + EVALUATION_BATCH], tf.uint8)
        probabilities = signature(**{contract.IMAGES_INPUT: batch})[contract.PROBABILITIES]
        predicted = np.argmax(probabilities.numpy(), axis=1)
        correct += int(np.sum(predicted == labels[start : start + EVALUATION_BATCH]))
    return correct / len(labels)


def compare(
    accuracy: float,
    reference_accuracy: float,
    reference: Reference,
    model_name: str,
    examples: int,
    max_regression: float,
    allow_regression: bool,
) -> tuple[dict, str | None]:
    """The comparison for metrics.json, and the refusal (None when publishing may go on)."""
    delta = accuracy - reference_accuracy
    # A hair of slack so that "exactly at the tolerance" is not lost to float rounding.
    passed = delta >= -max_regression - 1e-9
    comparison = {
        "reference_version": reference.version,
        "reference_chosen_by": reference.chosen_by,
        "reference_accuracy": reference_accuracy,
        "accuracy": accuracy,
        "delta": delta,
        "test_examples": examples,
        "max_regression": max_regression,
        "passed": passed,
        "allow_regression": allow_regression,
    }
    refusal = None
    if not passed and not allow_regression:
        refusal = (
            f"test accuracy {accuracy:.4f} is {-delta:.4f} below the {reference_accuracy:.4f} of "
            f"{reference.describe(model_name)} on the same {examples} test images, more than "
            f"--max-regression {max_regression:g}; nothing published (--allow-regression "
            "publishes it anyway)"
        )
    return comparison, refusal


def summary(comparison: dict, model_name: str) -> str:
    """One line with both figures, for a comparison that lets the model through."""
    verdict = (
        "publishing"
        if comparison["passed"]
        else f"worse by more than --max-regression {comparison['max_regression']:g}, "
        "publishing anyway (--allow-regression)"
    )
    accuracy, reference_accuracy = comparison["accuracy"], comparison["reference_accuracy"]
    return (
        f"gate: test accuracy {accuracy:.4f} vs {reference_accuracy:.4f}"
        f" of version {comparison['reference_version']} of {model_name} "
        f"({comparison['reference_chosen_by']}) on the same {comparison['test_examples']} test "
        f"images ({comparison['delta']:+.4f}): {verdict}"
    )
