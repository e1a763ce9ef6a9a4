"""TensorFlow without its start-up noise: oneDNN, cudart_stub, cuInit, printed twice.

Used by the trainer (`--verbose` shows the noise) and the local server (`--verbose`); standard
library only, so importing it costs nothing until TensorFlow is wanted.

TensorFlow 2.21 writes these lines from C++ before its logging is initialised, so
TF_CPP_MIN_LOG_LEVEL does not reach most of them ("All log messages before
absl::InitializeLog() is called are written to STDERR"). `import_tensorflow` therefore imports
TensorFlow, and probes for GPUs once (where cuInit complains), with file descriptor 2 sent to a
temporary file, then writes every line that is not known noise back to stderr: errors that
matter still show. With `verbose` nothing is filtered and TensorFlow logs at INFO.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator

# Lines TensorFlow prints on every start of a CPU-only (or not yet probed) machine.
NOISE = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called"
    r"|oneDNN custom operations are on"
    r"|cudart_stub\.cc"
    r"|Could not find cuda drivers on your machine"
    r"|failed call to cuInit"
    r"|Unable to register cu(DNN|FFT|BLAS) factory"
    r"|computation placer already registered"
    r"|TF-TRT Warning"
    r"|This TensorFlow binary is optimized to use available CPU instructions"
    r"|rebuild TensorFlow with the appropriate compiler flags"
    r"|cpu_feature_guard\.cc"
)


def configure(verbose: bool = False) -> None:
    """Set TensorFlow's log level before it is imported (a level the user set wins)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose else "2")


def import_tensorflow(verbose: bool = False):
    """Import TensorFlow and probe its GPUs with the start-up noise filtered; returns the module."""
    configure(verbose)
    if verbose or "tensorflow" in sys.modules:
        import tensorflow as tf

        return tf
    with filtered_stderr():
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")  # cuInit happens here, once per process
    return tf


@contextlib.contextmanager
def filtered_stderr(noise: re.Pattern[str] = NOISE) -> Iterator[None]:
    """Capture file descriptor 2 (C++ and Python alike) and replay all but the `noise` lines."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all
        yield
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", "replace")
            kept = [line for line in text.splitlines() if line.strip() and not noise.search(line)]
            if kept:
                print("\n".join(kept), file=sys.stderr)
