"""Transport-neutral types: what every transport returns, whatever the wire format.

The gRPC and REST transports both convert their replies into these, so everything
above the transport (scoring, evaluation, the CLI) is written once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from common.contract import SERVING_DEFAULT


@dataclass(frozen=True)
class ModelSpec:
    """Which model to address: a name, and at most one of a version or a label."""

    name: str = "mnist"
    version: int | None = None
    label: str | None = None
    signature: str = SERVING_DEFAULT

    def __post_init__(self) -> None:
        if self.version is not None and self.label is not None:
            raise ValueError("give a model version or a version label, not both")


@dataclass(frozen=True)
class TensorInfo:
    """One input or output of a signature. `shape` uses -1 for unknown dimensions."""

    name: str  # the signature's key, e.g. "images"
    dtype: str  # numpy dtype name: "uint8", "float32", "int64", "object" (strings)
    shape: tuple[int, ...] | None  # None when the rank is unknown


@dataclass(frozen=True)
class SignatureInfo:
    name: str
    inputs: dict[str, TensorInfo]
    outputs: dict[str, TensorInfo]
    method_name: str = "tensorflow/serving/predict"


@dataclass(frozen=True)
class ModelMetadata:
    name: str
    version: int
    signatures: dict[str, SignatureInfo]


@dataclass(frozen=True)
class VersionStatus:
    version: int
    state: str  # "START", "LOADING", "AVAILABLE", "UNLOADING", "END"
    error_code: str = "OK"
    error_message: str = ""


@dataclass
class PredictResult:
    """Outputs of one predict call, as numpy arrays keyed by the signature's output names."""

    outputs: dict[str, np.ndarray]
    model_name: str
    model_version: int
    latency_ms: float = 0.0
    extra: dict[str, object] = field(default_factory=dict)
