"""A local server that speaks TensorFlow Serving's REST and gRPC APIs (`python -m serving`)."""
