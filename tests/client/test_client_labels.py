"""`status --label` and `wait --label` against a server whose status call ignores labels.

TF Serving's GetModelStatus only narrows by version number (get_model_status_impl.cc) and lists
every version when the request names a label, so the commands must resolve the label themselves.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from client.cli import app
from client.commands import common
from client.errors import ClientError
from client.types import ModelMetadata, ModelSpec, VersionStatus

runner = CliRunner()


class LabelBlindTransport:
    """Versions 2 (AVAILABLE) and 1 (LOADING); labels as TF Serving's two calls treat them."""

    def __init__(self, labels: dict[str, int], states: dict[int, str]) -> None:
        self.labels = labels
        self.states = states

    def __enter__(self) -> LabelBlindTransport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def status(self, model: ModelSpec) -> list[VersionStatus]:
        if model.version is not None:
            return [VersionStatus(model.version, self.states[model.version])]
        return [VersionStatus(version, state) for version, state in self.states.items()]

    def metadata(self, model: ModelSpec) -> ModelMetadata:
        if model.label not in self.labels:
            raise ClientError(f"Unrecognized servable version label: {model.label}", "NOT_FOUND")
        version = self.labels[model.label]
        if self.states[version] != "AVAILABLE":
            raise ClientError(
                f"Servable not found for request: Specific({model.name}, {version})", "NOT_FOUND"
            )
        return ModelMetadata(name=model.name, version=version, signatures={})


@pytest.fixture
def transport(monkeypatch) -> LabelBlindTransport:
    fake = LabelBlindTransport({"stable": 2, "canary": 1}, {2: "AVAILABLE", 1: "LOADING"})
    monkeypatch.setattr(common, "open_transport", lambda *args, **kwargs: fake)
    return fake


def run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_status_with_a_label_lists_only_the_labelled_version(transport):
    result = run("status", "--label", "stable", "--json")
    assert result.exit_code == 0, result.output
    assert [row["version"] for row in json.loads(result.stdout)["versions"]] == [2]
    unlabelled = json.loads(run("status", "--json").stdout)["versions"]
    assert [row["version"] for row in unlabelled] == [2, 1]


def test_status_with_an_unknown_label_fails(transport):
    result = run("status", "--label", "nightly")
    assert result.exit_code == 1
    assert "NOT_FOUND" in result.stderr and "nightly" in result.stderr


def test_wait_for_a_label_waits_for_its_version_not_any(transport):
    result = run("wait", "--label", "canary", "--timeout", "0.3", "--interval", "0.05")
    assert result.exit_code == 1, result.output
    assert "(label canary) not AVAILABLE" in result.stderr
    transport.states[1] = "AVAILABLE"
    result = run("wait", "--label", "canary", "--timeout", "5")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "mnist (label canary) is AVAILABLE (version 1)"
