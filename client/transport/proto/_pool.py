"""The descriptor pool of the client's generated proto modules.

Not protobuf's default pool: TensorFlow and tensorflow-serving-api register the same full names
(`tensorflow.TensorProto`, `tensorflow.serving.PredictRequest`, ...) there from their own files,
and a second definition of a name in one pool is refused. In a pool of its own the client's
messages live beside TensorFlow's in one process, in either import order; on the wire they are
the same bytes. The well-known types the messages use (Any, Int64Value) are added to this pool
from protobuf's own modules, so their classes keep Any.Pack/Unpack.

This holds for protobuf's default (upb) backend. With the pure-Python backend
(PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python) protobuf also records every generated class in
the default pool's symbol table, so the client and TensorFlow then still clash in one process;
the client alone works there too.
"""

from google.protobuf import any_pb2, descriptor_pool, wrappers_pb2

POOL = descriptor_pool.DescriptorPool()
for _module in (any_pb2, wrappers_pb2):
    POOL.AddSerializedFile(_module.DESCRIPTOR.serialized_pb)
