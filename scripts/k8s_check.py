"""Static checks of everything that deploys the project: `make k8s-check`.

What runs here cannot be run on the build machines (no cluster, no Docker engine), so it is
checked as far as offline tools allow. Each check prints one line; the exit status is 1 when any
check failed, 2 for bad usage.

  render      `kubectl kustomize` builds every overlay under K8S_DIR/overlays, alone and with
              every optional component under K8S_DIR/components;
  schemas     every rendered object validates against the Kubernetes OpenAPI schemas, strictly
              (unknown fields are errors), for the oldest and the newest Kubernetes version we
              support; kinds from CRDs (ServiceMonitor) are only checked for their identity;
  checkov     the policy linter on every rendering, with K8S_DIR/.checkov.yaml (each skipped
              check is justified there);
  hadolint    every Dockerfile* at the repository root;
  serving     serving/compose.yaml parses and references existing config files, the three TF
              Serving config files parse as their protobuf messages (models.config is the
              template of a repository's rollout state: no copy of it is deployed, every server
              reads the model repository's own), and the ConfigMap copies of batching.config
              and monitoring.config in K8S_DIR/base/tf-serving/ say the same as serving/'s.

  python scripts/k8s_check.py [--k8s-dir k8s] [--kubectl .venv/bin/kubectl]
                              [--checkov .venv-tools/bin/checkov | --checkov ""]

Without --checkov (or with an empty one) the policy linter is reported as skipped, not passed.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
# The Kubernetes versions the manifests must be valid for: backoffLimitPerIndex (the scoring
# Job) is stable since 1.33; the newest is the newest schema kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.33", "1.37")
# Kinds whose schemas come from CRDs, which kubernetes-validate does not have.
CRD_API_GROUPS = ("monitoring.coreos.com/",)
SERVING_CONFIG_FILES = ("models.config", "batching.config", "monitoring.config")
# The files the tf-serving-config ConfigMap copies from serving/.
CONFIG_MAP_COPIES = ("batching.config", "monitoring.config")


@dataclass
class Report:
    failures: list[str] = field(default_factory=list)

    def ok(self, what: str) -> None:
        print(f"ok    {what}")

    def fail(self, what: str, why: str) -> None:
        first, _, rest = why.strip().partition("\n")
        print(f"FAIL  {what}: {first}")
        if rest:
            print("      " + rest.replace("\n", "\n      "))
        self.failures.append(what)

    def skip(self, what: str, why: str) -> None:
        print(f"skip  {what}: {why}")


# libyaml's loader when PyYAML has it: the pure-Python one dominates the run time.
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass
class Rendering:
    name: str
    text: str
    objects: list[dict] = field(default_factory=list)


def run(command: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)


def render_all(k8s_dir: Path, kubectl: str, report: Report) -> list[Rendering]:
    overlays = sorted(path for path in (k8s_dir / "overlays").glob("*") if path.is_dir())
    components = sorted(path for path in (k8s_dir / "components").glob("*") if path.is_dir())
    if not overlays:
        report.fail("render", f"no overlays under {k8s_dir / 'overlays'}")
        return []
    renderings = []
    with tempfile.TemporaryDirectory() as scratch:
        for overlay in overlays:
            targets = [(overlay.name, overlay)]
            for component in components:
                # A throwaway kustomization that layers the component on the overlay, the way a
                # user enables it.
                wrapper = Path(scratch) / f"{overlay.name}+{component.name}"
                wrapper.mkdir()
                (wrapper / "kustomization.yaml").write_text(
                    yaml.safe_dump(
                        {
                            "apiVersion": "kustomize.config.k8s.io/v1beta1",
                            "kind": "Kustomization",
                            "resources": [os.path.relpath(overlay.resolve(), wrapper)],
                            "components": [os.path.relpath(component.resolve(), wrapper)],
                        }
                    )
                )
                targets.append((wrapper.name, wrapper))
            for name, path in targets:
                # The wrapper reaches outside its own folder, which needs the load restrictor
                # off; the real overlays are rendered with the default one, as users do.
                extra = ["--load-restrictor=LoadRestrictionsNone"] if "+" in name else []
                result = run([kubectl, "kustomize", *extra, str(path)])
                if result.returncode != 0:
                    report.fail(f"render {name}", result.stderr or result.stdout)
                    continue
                try:
                    objects = [doc for doc in yaml.load_all(result.stdout, YAML_LOADER) if doc]
                except yaml.YAMLError as error:
                    report.fail(f"render {name}", f"output is not YAML: {error}")
                    continue
                rendering = Rendering(name, result.stdout, objects)
                report.ok(f"render {name}: {len(objects)} objects")
                renderings.append(rendering)
    return renderings


def object_name(obj: dict) -> str:
    return f"{obj.get('kind', '?')}/{(obj.get('metadata') or {}).get('name', '?')}"


def schema_errors(obj: dict, version: str) -> list[str]:
    import kubernetes_validate
    from kubernetes_validate import utils

    # validate() parses a 2 MB definitions file on every call; the files never change.
    if not hasattr(utils.schema_contents, "cache_info"):
        utils.schema_contents = functools.lru_cache(maxsize=None)(utils.schema_contents)

    if str(obj.get("apiVersion", "")).startswith(CRD_API_GROUPS):
        metadata = obj.get("metadata") or {}
        if metadata.get("name") and obj.get("kind") and obj.get("spec"):
            return []
        return [f"{object_name(obj)}: needs kind, metadata.name and spec"]
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        where = ".".join(str(part) for part in error.path) or "(top level)"
        return [f"{object_name(obj)}: {where}: {error.message}"]
    except kubernetes_validate.SchemaNotFoundError as error:
        return [f"{object_name(obj)}: {error.message}"]
    return []


def check_schemas(renderings: list[Rendering], report: Report) -> None:
    # Overlays share most objects: validate each distinct object once per version.
    cache: dict[tuple[str, str], list[str]] = {}
    for rendering in renderings:
        for version in KUBERNETES_VERSIONS:
            errors = []
            for obj in rendering.objects:
                key = (json.dumps(obj, sort_keys=True), version)
                if key not in cache:
                    cache[key] = schema_errors(obj, version)
                errors += cache[key]
            what = f"schemas {rendering.name} (Kubernetes {version}, strict)"
            custom = sum(
                str(obj.get("apiVersion", "")).startswith(CRD_API_GROUPS)
                for obj in rendering.objects
            )
            if errors:
                report.fail(what, "\n".join(errors))
            else:
                note = f", {custom} CRD objects checked for identity only" if custom else ""
                report.ok(what + note)


def check_policies(
    renderings: list[Rendering], k8s_dir: Path, checkov: str | None, report: Report
) -> None:
    if not checkov:
        report.skip("checkov", "no --checkov given (`make k8s-check` installs and passes it)")
        return
    executable = str(Path(checkov).resolve()) if Path(checkov).exists() else shutil.which(checkov)
    if executable is None:
        report.fail("checkov", f"{checkov} not found; `make tools` installs it")
        return
    config = (k8s_dir / ".checkov.yaml").resolve()
    with tempfile.TemporaryDirectory() as scratch:
        # One run over every rendering: checkov's start-up is most of its time.
        command = [executable, "--framework", "kubernetes", "--compact", "--quiet"]
        command += ["--skip-download"]
        for rendering in renderings:
            manifest = Path(scratch) / f"{rendering.name}.yaml"
            manifest.write_text(rendering.text)
            command += ["--file", str(manifest)]
        if config.exists():
            command += ["--config-file", str(config)]
        # Run from the scratch folder, so that checkov never picks up other files by accident.
        result = run(command, cwd=Path(scratch))
        what = f"checkov {', '.join(rendering.name for rendering in renderings)}"
        if result.returncode != 0:
            report.fail(what, result.stdout[-4000:] or result.stderr[-4000:])
        else:
            summary = [line for line in result.stdout.splitlines() if "Passed checks" in line]
            report.ok(f"{what}: {summary[-1].strip() if summary else 'no findings'}")


def check_dockerfiles(repo_root: Path, hadolint: str, report: Report) -> None:
    dockerfiles = sorted(repo_root.glob("Dockerfile*"))
    if not dockerfiles:
        report.fail("hadolint", f"no Dockerfile* in {repo_root}")
        return
    for dockerfile in dockerfiles:
        result = run([hadolint, str(dockerfile)])
        if result.returncode != 0:
            report.fail(f"hadolint {dockerfile.name}", result.stdout or result.stderr)
        else:
            report.ok(f"hadolint {dockerfile.name}")


def parse_text_proto(path: Path, message_factory: Callable[[], object]) -> object:
    from google.protobuf import text_format

    return text_format.Parse(path.read_text(), message_factory())


def serving_config_messages() -> dict[str, Callable[[], object]]:
    from tensorflow_serving.config import model_server_config_pb2

    # TF Serving's pip package lacks these two messages; the local server declares them.
    from serving.protos import batching_parameters, monitoring_config

    return {
        "models.config": model_server_config_pb2.ModelServerConfig,
        "batching.config": batching_parameters,
        "monitoring.config": monitoring_config,
    }


def check_serving(repo_root: Path, k8s_dir: Path, report: Report) -> None:
    serving_dir = repo_root / "serving"
    compose_path = serving_dir / "compose.yaml"
    try:
        compose = yaml.safe_load(compose_path.read_text())
        services = compose["services"]
        problems = []
        for name, service in services.items():
            if ":" not in str(service.get("image", "")):
                problems.append(f"service {name}: image without a tag")
            for argument in service.get("command") or []:
                # Flags that name a file in the mounted config folder must name a real one.
                _, _, value = str(argument).partition("=")
                config_file = value.removeprefix("/config/")
                if value.startswith("/config/") and not (serving_dir / config_file).exists():
                    problems.append(f"{name}: {argument}, but serving/{config_file} is missing")
        if problems:
            report.fail("compose serving/compose.yaml", "\n".join(problems))
        else:
            report.ok(f"compose serving/compose.yaml: services {', '.join(services)}")
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError) as error:
        report.fail("compose serving/compose.yaml", f"{type(error).__name__}: {error}")

    try:
        messages = serving_config_messages()
    except ImportError as error:
        report.fail("serving config", f"cannot load the config messages: {error}")
        return
    for name in SERVING_CONFIG_FILES:
        original = serving_dir / name
        try:
            parsed_original = parse_text_proto(original, messages[name])
            copy = k8s_dir / "base" / "tf-serving" / name
            parsed_copy = (
                parse_text_proto(copy, messages[name]) if name in CONFIG_MAP_COPIES else None
            )
        except Exception as error:  # text_format.ParseError, OSError: both mean "broken"
            report.fail(f"serving config {name}", f"{type(error).__name__}: {error}")
            continue
        if parsed_copy is None:
            report.ok(f"serving config {name}: parses (the rollout state's template)")
        elif parsed_original != parsed_copy:
            report.fail(
                f"serving config {name}",
                f"{copy} differs from serving/{name}; copy it: cp serving/{name} {copy.parent}/",
            )
        else:
            report.ok(f"serving config {name}: parses, k8s copy equivalent")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--k8s-dir", type=Path, default=REPO_ROOT / "k8s", help="kustomize tree")
    parser.add_argument("--repo-root", type=Path, default=REPO_ROOT, help="Dockerfiles, serving/")
    parser.add_argument("--kubectl", default=str(REPO_ROOT / ".venv" / "bin" / "kubectl"))
    parser.add_argument("--hadolint", default=str(REPO_ROOT / ".venv" / "bin" / "hadolint"))
    parser.add_argument("--checkov", default="", help="checkov executable; empty: skip it")
    args = parser.parse_args(argv)
    for tool in (args.kubectl, args.hadolint):
        if not Path(tool).exists() and shutil.which(tool) is None:
            print(f"k8s_check: {tool} not found; `make setup` installs it", file=sys.stderr)
            return 2
    if not args.k8s_dir.is_dir():
        print(f"k8s_check: no kustomize tree at {args.k8s_dir}", file=sys.stderr)
        return 2

    report = Report()
    renderings = render_all(args.k8s_dir, args.kubectl, report)
    check_schemas(renderings, report)
    check_policies(renderings, args.k8s_dir, args.checkov or None, report)
    check_dockerfiles(args.repo_root, args.hadolint, report)
    check_serving(args.repo_root, args.k8s_dir, report)
    if report.failures:
        print(f"k8s-check: {len(report.failures)} check(s) failed", file=sys.stderr)
        return 1
    print("k8s-check: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
