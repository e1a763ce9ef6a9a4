"""TF Serving's gRPC API for the client: our own .proto declarations of its wire format.

`tensorflow.proto` (package `tensorflow`: DataType, TensorShapeProto, TensorProto, TensorInfo,
SignatureDef), `tensorflow_error.proto` (package `tensorflow.error`: Code) and
`tensorflow_serving.proto` (package `tensorflow.serving`: ModelSpec, Predict, GetModelMetadata,
GetModelStatus and the PredictionService / ModelService services) declare only what the client
uses, with TF Serving's package names and field numbers, so requests and replies are
byte-for-byte what TF Serving's own stubs send. They are compiled when the project is installed
(`_build.py`); import them through `client.transport.protos.load()`, which says what to do when
they are missing.
"""
