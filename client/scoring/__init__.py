"""Batch scoring: image files in, one `ScoredImage` per file out, in input order.

`score_files` is the engine behind `score`, `predict` and `evaluate`. Its pieces, one job each:

    results.py   the model's contract: which input to fill, and a reply turned into results
    sharding.py  relative names and the stable shard of each file
    decoding.py  files to a stacked batch of pixels (threads or worker processes)
    retrying.py  one retry loop per batch, with the outage shared between batches
    progress.py  the progress bar
    pipeline.py  score_files: decoding and requests overlapped, results in input order
"""

from client.scoring.pipeline import BATCH_RETRYABLE_CODES, score_files
from client.scoring.results import (
    DEFAULT_MIN_CONFIDENCE,
    INPUT_CHECKS,
    ImageInput,
    ScoredImage,
    failed_result,
    image_input,
)
from client.scoring.sharding import parse_shard, relative_name, shard_of

__all__ = [
    "BATCH_RETRYABLE_CODES",
    "DEFAULT_MIN_CONFIDENCE",
    "INPUT_CHECKS",
    "ImageInput",
    "ScoredImage",
    "failed_result",
    "image_input",
    "parse_shard",
    "relative_name",
    "score_files",
    "shard_of",
]
