"""The contract every published model follows (DESIGN.md, "The contract"), written once.

The trainer exports these names, the client and the tests look for them; the local server
serves any SavedModel and never reads them. The client still learns the input shape and the
class names of a model from the metadata API at run time: only the names and dtypes are fixed.
This module imports nothing, so any environment (the thin client included) can use it.
"""

# Signature that takes decoded pixels, scaled to float inside the graph: uint8 [-1, H, W, C].
SERVING_DEFAULT = "serving_default"
IMAGES_INPUT = "images"
IMAGES_DTYPE = "uint8"

# Signature that takes encoded PNG/JPEG strings, decoded and resized inside the graph: [-1].
SERVING_BYTES = "serving_bytes"
IMAGE_BYTES_INPUT = "image_bytes"
IMAGE_BYTES_DTYPE = "string"
# The most pixels one encoded image may declare: the client refuses bigger files before
# sending them, and `serving_bytes` refuses them from the header before decoding (40 MP is
# 160 MB of RGBA; a few-KB PNG can declare 20000x20000).
MAX_IMAGE_PIXELS = 40_000_000

# Outputs of both signatures: probabilities [-1, K], class_ids [-1], classes [-1] (the names).
PROBABILITIES = "probabilities"
CLASS_IDS = "class_ids"
CLASSES = "classes"
OUTPUT_DTYPES = {PROBABILITIES: "float32", CLASS_IDS: "int64", CLASSES: "string"}

# Files in a version's assets.extra/: TF Serving fixes the warmup file's name.
ASSETS_EXTRA = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"
MODEL_INFO_FILE = "model_info.json"
