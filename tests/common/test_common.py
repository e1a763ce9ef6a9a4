"""common/: the contract and the TensorFlow quieting import only the standard library, the three
packages use the one copy of each, and the local server never reads the contract."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("module", ["common.contract", "common.quiet"])
def test_imports_nothing_but_the_standard_library(module: str) -> None:
    code = (
        f"import json, sys; before = set(sys.modules); import {module}; "
        "print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    foreign = [
        name
        for name in loaded
        if name.split(".")[0] not in sys.stdlib_module_names and name.split(".")[0] != "common"
    ]
    assert module in loaded and not foreign, foreign


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def test_common_imports_none_of_the_three_packages() -> None:
    for path in (REPO_ROOT / "common").rglob("*.py"):
        roots = {name.split(".")[0] for name in imported_modules(path)}
        assert not roots & {"trainer", "serving", "client"}, path


def test_the_server_stays_generic_and_never_reads_the_contract() -> None:
    for path in (REPO_ROOT / "serving").rglob("*.py"):
        assert "common.contract" not in imported_modules(path), path


def test_the_trainer_and_the_client_never_spell_the_contract_themselves() -> None:
    """No string literal in trainer/ or client/ is one of the contract's names: they import them.
    ("images" and "classes" are left out: they are ordinary words there too.)"""
    from common import contract

    names = {
        value for key, value in vars(contract).items() if key.isupper() and isinstance(value, str)
    } - {"images", "classes", "uint8", "float32", "int64", "string"}
    # The Keras layer's own name, not the signature's output key (export maps it to that).
    allowed = {("trainer/models.py", contract.PROBABILITIES)}
    found = []
    for package in ("trainer", "client"):
        for path in (REPO_ROOT / package).rglob("*.py"):
            if "_pb2" in path.name:  # generated from TF Serving's protos
                continue
            relative = path.relative_to(REPO_ROOT).as_posix()
            for node in ast.walk(ast.parse(path.read_text())):
                literal = isinstance(node, ast.Constant) and node.value in names
                if literal and (relative, node.value) not in allowed:
                    found.append(f"{relative}:{node.lineno}: {node.value!r}")
    assert not found, found
    assert contract.OUTPUT_DTYPES == {
        "probabilities": "float32", "class_ids": "int64", "classes": "string"
    }  # fmt: skip


def test_both_command_lines_use_the_one_error_style() -> None:
    from typer.testing import CliRunner

    from client.cli import app as client_app
    from common.cli import OneLineErrors
    from trainer.cli import app as trainer_app

    for app in (client_app, trainer_app):
        assert app.info.cls is OneLineErrors
        result = CliRunner().invoke(app, ["--no-such-option"])
        assert result.exit_code == 2
        assert result.stderr.startswith("error: No such option: --no-such-option"), result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_the_error_classes_share_one_message_and_exit_code() -> None:
    """Each package's one-line error is a common.cli.OneLineError with its own usual code, which
    a raise site can override; EvaluationError stays a ValueError for callers that catch that."""
    from client.evaluation import EvaluationError
    from client.rollout.steps import RolloutError
    from common.cli import OneLineError
    from trainer.gate import GateError
    from trainer.training import RunError

    usual = {RunError: 2, GateError: 3, RolloutError: 1, EvaluationError: 2}
    for error_class, code in usual.items():
        assert issubclass(error_class, OneLineError)
        error = error_class("what is wrong")
        assert (str(error), error.exit_code) == ("what is wrong", code)
        assert error_class("what is wrong", 4).exit_code == 4
        assert error_class.exit_code == code  # an override changes only its own instance
    assert isinstance(EvaluationError("x"), ValueError)
