"""Build step: compile this folder's .proto files into the client's gRPC modules.

Runs when the project is installed (`pip install -e '.[client]'`, `pip install .`, `make setup`):
pyproject.toml points setuptools' `build_py` command here, and grpcio-tools (a build
requirement, never a runtime one) compiles the .proto files with its bundled protoc into
`*_pb2.py` / `*_pb2_grpc.py` beside them. The generated files are not checked in (.gitignore).

One change is made to protoc's output: the modules register their descriptors in the client's
own descriptor pool (`_pool.POOL`) instead of protobuf's default pool. TensorFlow's generated
modules register the same full names (`tensorflow.TensorProto`, ...) in the default pool, and
both must be importable in one process (the tests and the local server do it).

Also runnable by hand, with grpcio-tools installed: `python client/transport/proto/_build.py`.
This file is loaded by setuptools by its path, so it imports nothing from the client package.
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent
ROOT = PROTO_DIR.parents[2]  # the folder holding client/: protoc's import root
PACKAGE = "client.transport.proto"

DEFAULT_POOL = "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile("
PRIVATE_POOL = (
    "from client.transport.proto._pool import POOL as _POOL  # the client's own pool, not"
    " protobuf's default (see _build.py)\nDESCRIPTOR = _POOL.AddSerializedFile("
)
STAMP = "_compiled.py"


def proto_files() -> list[Path]:
    return sorted(PROTO_DIR.glob("*.proto"))


def source_digests(paths: list[Path] | None = None) -> dict[str, str]:
    """sha256 of each .proto file by name; the stamp records them so stale modules show."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths or proto_files()}


def generate() -> dict[str, str]:
    """Compile every .proto here; returns {file name: Python source} of the modules to write."""
    import grpc_tools
    from grpc_tools import protoc

    well_known = Path(grpc_tools.__file__).parent / "_proto"  # google/protobuf/*.proto
    sources = [p.relative_to(ROOT).as_posix() for p in proto_files()]
    with tempfile.TemporaryDirectory() as out:
        args = [
            "grpc_tools.protoc",
            f"--proto_path={ROOT}",
            f"--proto_path={well_known}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            *sources,
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {', '.join(sources)}")
        generated = Path(out, *PACKAGE.split("."))
        modules: dict[str, str] = {}
        for path in sorted(generated.glob("*.py")):
            text = path.read_text(encoding="utf-8")
            if path.name.endswith("_pb2_grpc.py"):
                if "class " not in text:
                    continue  # a .proto without services: protoc still writes an empty module
            elif text.count(DEFAULT_POOL) != 1:
                raise RuntimeError(f"unexpected protoc output in {path.name}: no default pool")
            modules[path.name] = text.replace(DEFAULT_POOL, PRIVATE_POOL)
    from grpc_tools.grpc_version import VERSION

    digests = "".join(f'    "{name}": "{digest}",\n' for name, digest in source_digests().items())
    modules[STAMP] = (
        '"""Written by _build.py when the protos were compiled; do not edit."""\n\n'
        f'GRPCIO_TOOLS = "{VERSION}"\n'
        f"SOURCES = {{\n{digests}}}\n"
    )
    return modules


def write(modules: dict[str, str], target: Path = PROTO_DIR) -> list[Path]:
    """Write the modules into `target`, leaving files whose content is already right alone."""
    written = []
    for name, text in modules.items():
        path = target / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            written.append(path)
    return written


def compile_protos() -> list[Path]:
    return write(generate())


try:
    from setuptools.command.build_py import build_py as _build_py
except ModuleNotFoundError:  # run by hand without setuptools: only compile_protos() is needed
    _build_py = object


class BuildPy(_build_py):  # type: ignore[misc, valid-type]
    """setuptools' build_py, compiling the protos first (into the source tree, so an editable
    install sees them and a wheel's build_py copies them like any module)."""

    def run(self) -> None:
        for path in compile_protos():
            print(f"compiled {path.relative_to(ROOT)}", file=sys.stderr)
        super().run()


if __name__ == "__main__":
    written = compile_protos()
    print("\n".join(str(p.relative_to(ROOT)) for p in written) or "up to date")
