"""Publish a copy of a SavedModel folder slowly, so a test can kill it at chosen moments.

    python publish_worker.py BASE SOURCE DELAY

Every file is written in two halves with DELAY seconds after each half, through the trainer's
real `publish()`; the output is one line "writing" once the staging folder exists.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from trainer.publish import publish


def main() -> None:
    base, source, delay = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])

    def write(folder: Path) -> None:
        print("writing", flush=True)
        for path in sorted(source.rglob("*")):
            target = folder / path.relative_to(source)
            if path.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            content = path.read_bytes()
            with open(target, "wb") as stream:
                stream.write(content[: len(content) // 2])
                stream.flush()
                time.sleep(delay)
                stream.write(content[len(content) // 2 :])
            time.sleep(delay)

    result = publish(base, write)
    print(f"published {result.version}", flush=True)


if __name__ == "__main__":
    main()
