"""Start-up cost and isolation: --help imports neither TensorFlow nor grpc; REST never imports
TensorFlow or grpc; gRPC uses the client's own protos, never TensorFlow's, and they live beside
TensorFlow's in one process whichever is imported first."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from client_fixtures import fake, fake_server_instance

__all__ = ["fake", "fake_server_instance"]  # fixtures used by name


def run_snippet(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def loaded(prefixes: str) -> str:
    return f"print(sorted(m for m in sys.modules if m.split('.')[0] in {prefixes!r}))"


def test_help_imports_neither_tensorflow_nor_grpc():
    output = run_snippet(
        f"""
        import runpy, sys
        sys.argv = ["client", "--help"]
        try:
            runpy.run_module("client", run_name="__main__")
        except SystemExit as exit:
            assert exit.code == 0, exit.code
        {loaded(("tensorflow", "grpc", "tensorflow_serving", "keras", "requests", "PIL"))}
        """
    )
    assert output.strip().endswith("[]"), output
    assert "score" in output and "evaluate" in output


@pytest.mark.parametrize("kind", ["grpc", "rest"])
def test_score_loads_no_validation_library_and_no_tensorflow(fake, tmp_path, kind):
    # Start-up is part of every `score` figure (benchmarks/score_throughput.py). typer 0.29
    # imported pydantic and built a TypeAdapter per option, 0.15-0.25 s a command; the pin in
    # pyproject.toml keeps it out, and this fails if an upgrade or a new import brings it back.
    from client_fixtures import make_uniform_folder

    make_uniform_folder(tmp_path / "in", [3, 4])
    server = fake.grpc_url if kind == "grpc" else fake.rest_url
    output = run_snippet(
        f"""
        import runpy, sys
        sys.argv = ["client", "score", {str(tmp_path / "in")!r}, "--out",
                    {str(tmp_path / "out.csv")!r}, "--server", {server!r}]
        try:
            runpy.run_module("client", run_name="__main__")
        except SystemExit as exit:
            assert exit.code == 0, exit.code
        {loaded(("pydantic", "pydantic_core", "tensorflow", "keras"))}
        """
    )
    assert output.strip().endswith("[]"), output
    assert (tmp_path / "out.csv").read_text().count("\n") == 3  # the header and both files


def test_rest_path_never_imports_tensorflow_or_grpc(fake, tmp_path):
    from client_fixtures import make_uniform_folder

    make_uniform_folder(tmp_path, [3, 4])
    output = run_snippet(
        f"""
        import sys
        from pathlib import Path
        from client.preprocess import list_images
        from client.scoring import score_files
        from client.transport import connect
        from client.types import ModelSpec
        with connect({fake.rest_url!r}) as transport:
            transport.status(ModelSpec())
            root = Path({str(tmp_path)!r})
            results = list(score_files(transport, ModelSpec(), list_images(root), root=root))
        assert [r.class_id for r in results] == [3, 4], results
        {loaded(("tensorflow", "grpc", "tensorflow_serving"))}
        """
    )
    assert output.strip() == "[]", output


def test_grpc_path_never_imports_tensorflow(fake):
    output = run_snippet(
        f"""
        import sys
        from client.transport import connect
        from client.types import ModelSpec
        with connect({fake.grpc_url!r}) as transport:
            assert transport.metadata(ModelSpec()).version == 3
            assert transport.status(ModelSpec())[0].state == "AVAILABLE"
        {loaded(("tensorflow", "tensorflow_serving", "keras"))}
        """
    )
    assert output.strip() == "[]", output


# Both import orders: TensorFlow's generated modules register tensorflow.TensorProto and friends
# in protobuf's default pool; the client's own modules must neither clash with them nor replace
# them, and the bytes each side writes must parse on the other.
INTEROP = """
    import numpy as np
    from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2
    from client.transport import protos
    from client.transport.grpc_transport import to_numpy, to_tensor_proto
    pb = protos.load()
    ours = pb.predict_pb2.PredictRequest()
    ours.model_spec.name = "mnist"
    ours.model_spec.version.value = 3
    ours.model_spec.signature_name = "serving_default"
    ours.inputs["images"].CopyFrom(to_tensor_proto(np.arange(6, dtype=np.uint8).reshape(1, 2, 3)))
    theirs = predict_pb2.PredictRequest.FromString(ours.SerializeToString())
    assert tf.make_ndarray(theirs.inputs["images"]).tolist() == [[[0, 1, 2], [3, 4, 5]]]
    assert theirs.SerializeToString(deterministic=True) == ours.SerializeToString(
        deterministic=True
    )
    reply = predict_pb2.PredictResponse()
    reply.outputs["classes"].CopyFrom(tf.make_tensor_proto([b"a", b"b"]))
    reply.outputs["p"].CopyFrom(tf.make_tensor_proto(np.float32([[0.25, 0.75]])))
    decoded = pb.predict_pb2.PredictResponse.FromString(reply.SerializeToString())
    assert to_numpy(decoded.outputs["classes"]).tolist() == [b"a", b"b"]
    assert to_numpy(decoded.outputs["p"]).tolist() == [[0.25, 0.75]]
    signatures = get_model_metadata_pb2.SignatureDefMap()
    signatures.signature_def["serving_default"].method_name = "tensorflow/serving/predict"
    metadata = get_model_metadata_pb2.GetModelMetadataResponse()
    metadata.metadata["signature_def"].Pack(signatures)
    mine = pb.get_model_metadata_pb2.GetModelMetadataResponse.FromString(
        metadata.SerializeToString()
    )
    unpacked = pb.get_model_metadata_pb2.SignatureDefMap()
    assert mine.metadata["signature_def"].Unpack(unpacked)
    assert unpacked.signature_def["serving_default"].method_name == "tensorflow/serving/predict"
    assert pb.tensor_pb2.TensorProto is not tensor_pb2.TensorProto  # TensorFlow's stays its own
    print("interoperable")
"""


@pytest.mark.slow
@pytest.mark.parametrize("first", ["client", "tensorflow"])
def test_client_protos_and_tensorflow_share_a_process_in_either_order(fake, first):
    client_first = f"""
        from client.transport import connect
        from client.types import ModelSpec
        with connect({fake.grpc_url!r}) as transport:
            assert transport.metadata(ModelSpec()).version == 3
    """
    tensorflow_first = """
        import tensorflow as tf
        from tensorflow.core.framework import tensor_pb2
        from tensorflow_serving.apis import prediction_service_pb2_grpc
    """
    steps = (
        [client_first, tensorflow_first] if first == "client" else [tensorflow_first, client_first]
    )
    output = run_snippet("".join(textwrap.dedent(step) for step in [*steps, INTEROP]))
    assert "interoperable" in output, output


@pytest.mark.parametrize(("blocked", "server"), [("requests", "http://x"), ("grpc", "grpc://x")])
def test_a_missing_library_says_which_extra_to_install(blocked, server):
    output = run_snippet(
        f"""
        import sys
        sys.modules[{blocked!r}] = None  # as if it were not installed
        from client.transport import connect
        try:
            connect({server!r})
        except ModuleNotFoundError as error:
            print(error)
        """
    )
    assert f"needs '{blocked}'" in output and "digits-serving[client]" in output


def test_uncompiled_protos_say_how_to_compile_them():
    output = run_snippet(
        """
        import sys
        sys.modules["client.transport.proto.tensorflow_pb2"] = None  # as if never compiled
        from client.transport import connect
        try:
            connect("grpc://x")
        except ModuleNotFoundError as error:
            print(error)
        """
    )
    assert "not compiled" in output and "pip install -e '.[client]'" in output, output


def test_compiled_protos_are_those_of_the_proto_files():
    from client.transport import protos

    assert protos.stale_sources() == [], "run pip install -e . to compile the changed .proto files"
