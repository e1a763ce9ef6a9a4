"""Structured logs: one line per event, `time=... level=... event=... key=value ...`."""

from __future__ import annotations

import sys
import threading
import time

_lock = threading.Lock()


def _format(value: object) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' "=\n\t'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


def log(event: str, level: str = "info", **fields: object) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    millis = int(time.time() * 1000) % 1000
    parts = [f"time={stamp}.{millis:03d}Z", f"level={level}", f"event={event}"]
    parts += [f"{key}={_format(value)}" for key, value in fields.items()]
    with _lock:
        sys.stderr.write(" ".join(parts) + "\n")
        sys.stderr.flush()
