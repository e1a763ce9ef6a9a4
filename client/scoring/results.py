"""The model's contract as scoring reads it: which input to fill, and how a predict reply
becomes one `ScoredImage` per file (class, confidence, top-k, warnings)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from client.errors import ClientError
from client.types import ModelMetadata, PredictResult
from common.contract import CLASS_IDS, CLASSES, PROBABILITIES

# Out-of-distribution warnings (the `warning` column). input_check: "auto" checks that the model
# input looks like one light glyph on a dark background (client.preprocess.glyph_check) for
# digit models (one input channel, classes named 0-9), "glyph" for every one-channel model,
# "off" never. min_confidence: a prediction whose probability is below it is flagged too.
INPUT_CHECKS = ("auto", "glyph", "off")
DEFAULT_MIN_CONFIDENCE = 0.5
_DIGIT_NAMES = frozenset("0123456789")


@dataclass
class ScoredImage:
    """The outcome for one input file: a prediction, or `error` saying why there is none."""

    # POSIX path relative to the scoring root (as given when outside it), the real name as os
    # functions take it (undecodable bytes as surrogates); outputs write it escaped
    # (client.names.escape_name). A folder that could not be listed ends in "/".
    path: str
    class_id: int | None
    class_name: str | None  # from the model's `classes` output
    confidence: float | None  # probability of class_id
    top_k: list[tuple[int, str, float]]  # (class id, class name, probability), best first
    model_version: int | None
    error: str | None  # one line; None when scored
    probabilities: np.ndarray | None  # float32 [K]
    latency_ms: float | None  # round trip of the batch request this image travelled in
    # Why the input or the prediction looks out of distribution ("; "-joined), None when not.
    warning: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def failed_result(path: str, message: str) -> ScoredImage:
    """The result of a file (or a folder) that could not be scored, and why."""
    return ScoredImage(path, None, None, None, [], None, message, None, None)


@dataclass(frozen=True)
class ImageInput:
    """What the model's signature takes, from its metadata."""

    name: str  # signature input key, e.g. "images"
    height: int
    width: int
    channels: int
    dtype: str  # numpy dtype name of the input, e.g. "uint8"; "object" for encoded images
    # True for a signature that takes encoded files (string [-1], like serving_bytes): they are
    # sent as they are and the model decodes and resizes them. height, width and channels are
    # then those of the model's pixel signature (0 when it has none).
    encoded: bool = False


def image_input(metadata: ModelMetadata, signature: str) -> ImageInput:
    """The single image input of `signature`: pixels [-1, H, W, C], or encoded images
    (string [-1]); ValueError when it has neither."""
    if signature not in metadata.signatures:
        available = ", ".join(sorted(metadata.signatures)) or "none"
        raise ValueError(
            f"model {metadata.name!r} has no signature {signature!r} (it has: {available})"
        )
    inputs = metadata.signatures[signature].inputs
    if len(inputs) != 1:
        raise ValueError(
            f"signature {signature!r} takes {len(inputs)} inputs ({', '.join(inputs)}); "
            "scoring needs exactly one image input"
        )
    (info,) = inputs.values()
    shape = info.shape
    if info.dtype == "object":
        if shape is not None and len(shape) != 1:
            raise ValueError(
                f"input {info.name!r} of signature {signature!r} is a string tensor of shape "
                f"{shape}; scoring sends encoded images as one string per image, shape [batch]"
            )
        pixels = [
            image_input(metadata, other)
            for other, candidate in sorted(metadata.signatures.items())
            if other != signature
            and len(candidate.inputs) == 1
            and next(iter(candidate.inputs.values())).dtype != "object"
            and _is_image_shape(next(iter(candidate.inputs.values())).shape)
        ]
        height, width, channels = (
            (pixels[0].height, pixels[0].width, pixels[0].channels) if pixels else (0, 0, 0)
        )
        return ImageInput(info.name, height, width, channels, info.dtype, encoded=True)
    if not _is_image_shape(shape):
        raise ValueError(
            f"input {info.name!r} of signature {signature!r} has shape {shape}; scoring needs "
            "[batch, height, width, channels] with known height, width and channels"
        )
    return ImageInput(info.name, shape[1], shape[2], shape[3], info.dtype)


def _is_image_shape(shape: tuple[int, ...] | None) -> bool:
    return shape is not None and len(shape) == 4 and min(shape[1:]) > 0


class Interpreter:
    """Turns predict replies into results; shared by the batches of one run.

    top_k: classes listed per result. input_check, min_confidence: see INPUT_CHECKS.
    """

    def __init__(self, top_k: int, input_check: str, min_confidence: float) -> None:
        self.top_k = top_k
        self.input_check = input_check
        self.min_confidence = min_confidence
        # Class id -> name, learnt from the `classes` output: the serving API has no call that
        # lists class names, so top-k entries never predicted as top-1 yet show the id.
        self.class_names: dict[int, str] = {}
        # The `classes` values seen so far, decoded once each: a batch repeats a few names.
        self._texts: dict[object, str] = {}
        self._lock = threading.Lock()

    def results(
        self, reply: PredictResult, names: list[str], notes: Sequence[str | None] = ()
    ) -> list[ScoredImage]:
        """One ScoredImage per row of `reply`; `names` are the rows' files.

        notes: per row, what client.preprocess.glyph_check said about its input (or None).
        """
        outputs = reply.outputs
        probabilities = outputs.get(PROBABILITIES)
        class_ids = outputs.get(CLASS_IDS)
        if probabilities is None and class_ids is None:
            raise ClientError(
                f"the reply has neither 'probabilities' nor 'class_ids' (it has: "
                f"{', '.join(outputs) or 'nothing'})",
                "FAILED_PRECONDITION",
            )
        if probabilities is not None:
            probabilities = np.asarray(probabilities, dtype=np.float32).reshape(len(names), -1)
        if class_ids is None:
            class_ids = np.argmax(probabilities, axis=1)
        class_ids = np.asarray(class_ids).reshape(-1)
        classes = outputs.get(CLASSES)
        if classes is not None:
            classes = np.asarray(classes, dtype=object).reshape(-1)
        if len(class_ids) != len(names) or (classes is not None and len(classes) != len(names)):
            raise ClientError(
                f"the reply has {len(class_ids)} predictions for {len(names)} images", "INTERNAL"
            )
        ids = class_ids.tolist()
        with self._lock:
            class_texts = None if classes is None else [self._text(v) for v in classes.tolist()]
            if class_texts is not None:
                for class_id, text in zip(ids, class_texts, strict=True):
                    self.class_names.setdefault(class_id, text)
            names_now = dict(self.class_names)
        # Whole-batch numpy, then plain Python per row: per-row numpy calls cost more than the
        # rest of the row's work.
        confidences: list[float | None] = [None] * len(names)
        ranked_rows: list[list[tuple[int, str, float]]] = [[] for _ in names]
        if probabilities is not None and probabilities.shape[1] > 0:
            width = probabilities.shape[1]
            valid = [0 <= class_id < width for class_id in ids]
            picked = probabilities[np.arange(len(ids)), np.clip(ids, 0, width - 1)]
            confidences = [
                float(value) if ok else None
                for value, ok in zip(picked.tolist(), valid, strict=True)
            ]
            if self.top_k:
                best = np.argsort(-probabilities, axis=1, kind="stable")[:, : self.top_k]
                best_values = np.take_along_axis(probabilities, best, axis=1).tolist()
                ranked_rows = [
                    [
                        (k, names_now.get(k, str(k)), value)
                        for k, value in zip(row_ids, row_values, strict=True)
                    ]
                    for row_ids, row_values in zip(best.tolist(), best_values, strict=True)
                ]
        version = reply.model_version or None
        row_names = class_texts or [names_now.get(k, str(k)) for k in ids]
        return [
            ScoredImage(
                path=name,
                class_id=ids[row],
                class_name=row_names[row],
                confidence=confidences[row],
                top_k=ranked_rows[row],
                model_version=version,
                error=None,
                probabilities=None if probabilities is None else probabilities[row],
                latency_ms=reply.latency_ms,
                warning=self.warning(
                    notes[row] if row < len(notes) else None, row_names[row], confidences[row]
                ),
            )
            for row, name in enumerate(names)
        ]

    def _text(self, value: object) -> str:
        text = self._texts.get(value)
        if text is None:
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            if len(self._texts) < 65536:  # class names, not an unbounded set
                self._texts[value] = text
        return text

    def warning(self, note: str | None, class_name: str, confidence: float | None) -> str | None:
        """The `warning` of one prediction: its input's glyph note, when this model is one the
        check applies to, and a confidence below min_confidence."""
        if confidence is not None and confidence < self.min_confidence:
            low = f"low confidence {confidence:.2f} < {self.min_confidence:g}"
        elif not note:
            return None
        else:
            low = None
        reasons = []
        if note and (self.input_check == "glyph" or class_name in _DIGIT_NAMES):
            reasons.append(f"input does not look like a digit: {note}")
        if low:
            reasons.append(low)
        return "; ".join(reasons) or None
