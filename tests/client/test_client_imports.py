"""Start-up cost: --help imports neither TensorFlow nor grpc; REST never imports TensorFlow;
gRPC loads TF Serving's protos without running TensorFlow's package __init__."""

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


@pytest.mark.slow
def test_grpc_path_loads_protos_without_tensorflow_and_tensorflow_still_imports(fake):
    output = run_snippet(
        f"""
        import sys
        from client.transport import connect
        from client.types import ModelSpec
        with connect({fake.grpc_url!r}) as transport:
            assert transport.metadata(ModelSpec()).version == 3
        assert "tensorflow" not in sys.modules, "TensorFlow's __init__ ran"
        assert "tensorflow.core.framework.tensor_pb2" in sys.modules
        print("light")
        import tensorflow as tf  # the real package must still import and share the protos
        from tensorflow.core.framework import tensor_pb2
        from tensorflow_serving.apis import predict_pb2
        proto = tf.make_tensor_proto([1, 2, 3])
        assert isinstance(proto, tensor_pb2.TensorProto)
        request = predict_pb2.PredictRequest()
        request.inputs["x"].CopyFrom(proto)
        assert tf.make_ndarray(request.inputs["x"]).tolist() == [1, 2, 3]
        print("tensorflow", tf.__version__)
        """
    )
    assert "light" in output and "tensorflow 2." in output


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
