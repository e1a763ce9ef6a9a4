"""Run one rollout step in the cluster: `make k8s-rollout STEP="canary 3"`.

Creates a Job from the pod template of the suspended `rollout` CronJob
(k8s/base/cronjob-rollout.yaml) whose arguments are `rollout <STEP>`, waits until it finished,
prints its log and exits with the step's own exit code (0 done, 1 a server did not show the step,
2 bad options, 3 promote's gate refused).

  python scripts/k8s_rollout.py [--namespace digits-serving] [--kubectl kubectl]
                                [--timeout 3600] -- STEP...

STEP is what follows `python -m client rollout`: `status`, `canary 3`,
`promote /data/in/mnist-test`, `rollback`, with any of their options.
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import time

CRONJOB = "rollout"
CONTAINER = "rollout"


def job_from_cronjob(cronjob: dict, step: list[str], name: str) -> dict:
    """The Job `kubectl create job --from=cronjob/rollout` would make, running `rollout STEP`."""
    template = copy.deepcopy(cronjob["spec"]["jobTemplate"])
    spec = template["spec"]
    (container,) = [c for c in spec["template"]["spec"]["containers"] if c["name"] == CONTAINER]
    container["args"] = ["rollout", *step]
    metadata = template.get("metadata", {})
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": cronjob["metadata"].get("namespace"),
            "labels": {**cronjob["metadata"].get("labels", {}), **metadata.get("labels", {})},
            "annotations": {"cronjob.kubernetes.io/instantiate": "manual"},
        },
        "spec": spec,
    }


def job_name(step: list[str]) -> str:
    word = "".join(ch for ch in (step[0] if step else "step").lower() if ch.isalnum())[:20]
    return f"rollout-{word}-{int(time.time())}"


def kubectl(arguments: argparse.Namespace, *args: str, stdin: str | None = None) -> str:
    command = [arguments.kubectl, "-n", arguments.namespace, *args]
    result = subprocess.run(command, input=stdin, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {result.stderr.strip()}")
    return result.stdout


def wait_for(arguments: argparse.Namespace, name: str) -> int:
    """The exit code of the Job's container, once it has one."""
    deadline = time.monotonic() + arguments.timeout
    while time.monotonic() < deadline:
        pods = json.loads(kubectl(arguments, "get", "pods", "-l", f"job-name={name}", "-o", "json"))
        for pod in pods["items"]:
            for status in pod.get("status", {}).get("containerStatuses", []):
                terminated = status.get("state", {}).get("terminated")
                if status["name"] == CONTAINER and terminated:
                    return int(terminated["exitCode"])
        time.sleep(5)
    raise RuntimeError(f"job/{name} did not finish within {arguments.timeout:g} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--namespace", default="digits-serving")
    parser.add_argument("--kubectl", default="kubectl")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for the Job")
    parser.add_argument("step", nargs="+", help="what follows `python -m client rollout`")
    arguments = parser.parse_args(argv)
    try:
        cronjob = json.loads(kubectl(arguments, "get", "cronjob", CRONJOB, "-o", "json"))
        name = job_name(arguments.step)
        job = job_from_cronjob(cronjob, arguments.step, name)
        kubectl(arguments, "create", "-f", "-", stdin=json.dumps(job))
        print(f"job/{name}: python -m client rollout {' '.join(arguments.step)}", flush=True)
        code = wait_for(arguments, name)
        print(kubectl(arguments, "logs", f"job/{name}", "-c", CONTAINER), end="", flush=True)
    except RuntimeError as error:
        print(f"k8s_rollout: {error}", file=sys.stderr)
        return 1
    print(f"job/{name}: exit code {code}")
    return code


if __name__ == "__main__":
    sys.exit(main())
