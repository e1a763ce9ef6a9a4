"""The serving contract every published model follows (DESIGN.md, "The contract").

The server and the client read these names from the model's metadata at run time; this module
is the single place the trainer spells them, so a rename happens here or nowhere.
"""

from __future__ import annotations

# Signature that takes decoded pixels: uint8 [-1, H, W, C], scaled to float inside the graph.
SERVING_DEFAULT = "serving_default"
IMAGES_INPUT = "images"

# Signature that takes encoded PNG/JPEG strings, decoded and resized inside the graph.
SERVING_BYTES = "serving_bytes"
IMAGE_BYTES_INPUT = "image_bytes"

# Outputs of both signatures.
PROBABILITIES = "probabilities"  # float32 [-1, K]
CLASS_IDS = "class_ids"  # int64 [-1]
CLASSES = "classes"  # string [-1], the class names

# Files TF Serving reads from assets.extra/ (the warmup file name is fixed by TF Serving).
ASSETS_EXTRA = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"
MODEL_INFO_FILE = "model_info.json"

# Enough warmup records to trace both batch sizes TF Serving sees most, few enough to load fast.
WARMUP_RECORDS = 5
