"""Which name a file goes by in the results, and which shard of a split run it belongs to."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def parse_shard(text: str) -> tuple[int, int]:
    """ "i/N" -> (i, N) with 0 <= i < N (i is 0-based, like JOB_COMPLETION_INDEX)."""
    index_text, slash, count_text = text.strip().partition("/")
    try:
        index, count = int(index_text), int(count_text)
    except ValueError:
        index, count = -1, 0
    if not slash or count < 1 or not 0 <= index < count:
        raise ValueError(f"--shard must be i/N with 0 <= i < N, e.g. 0/4, not {text!r}")
    return index, count


def shard_of(relative_path: str, count: int) -> int:
    """The shard (0..count-1) a file belongs to: a stable hash of its relative POSIX path.

    A hash rather than a position keeps every file in its shard when others are added or removed.
    """
    digest = hashlib.blake2b(relative_path.encode("utf-8", "surrogateescape"), digest_size=8)
    return int.from_bytes(digest.digest(), "big") % count


def relative_name(path: Path | str, root: Path | str) -> str:
    """`path` relative to `root` as a POSIX string, or as given when it is outside `root`."""
    # String arithmetic: pathlib costs tens of microseconds per call, which adds up to seconds
    # over a folder of 100,000 images.
    text, base = os.fspath(path), os.fspath(root).rstrip(os.sep) + os.sep
    if text.startswith(base):
        text = text[len(base) :]
    elif os.path.isabs(text) != os.path.isabs(base):
        return Path(path).as_posix()
    return text.replace(os.sep, "/") if os.sep != "/" else text
