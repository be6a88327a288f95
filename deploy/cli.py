"""`make deploy-all`, `make deploy-models`, `make open-grafana`: the real deploy path on AWS.

    python -m deploy.cli deploy-all      # terraform apply, build+push images, kustomize apply
    python -m deploy.cli deploy-models   # per-pool Triton repositories -> s3://<bucket>/<pool>/
    python -m deploy.cli open-grafana    # port-forward Grafana and print its URL

Each command first checks everything it needs (deploy/preflight.py) and refuses, changing nothing,
when an AWS account, credentials or a cluster are not configured. Every command it then runs is
printed before it runs, and the first failure stops it (exit status of the failed step).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import yaml

from deploy import preflight
from deploy.overlay_inputs import IMAGE_DIRS, IMAGE_PLATFORMS, account_layer

REPO = preflight.REPO
TERRAFORM_DIR = REPO / "terraform"
BUILD_DIR = REPO / "build" / "deploy"
K8S_FLEET = REPO / "k8s" / "base" / "control" / "fleet.yaml"


class StepFailed(RuntimeError):
    def __init__(self, argv: Sequence[str], code: int) -> None:
        super().__init__(f"step failed (exit {code}): {' '.join(argv)}")
        self.code = code


def run_step(argv: Sequence[str], *, capture: bool = False, stdin: str | None = None, cwd: Path = REPO,
             also_ok: tuple[int, ...] = ()) -> tuple[int, str]:
    """Run one step, printed first; a failure stops the command.  ``also_ok``: exit codes that mean
    "partly done, the output is still valid" -> (exit code, stdout)."""
    print("+", " ".join(argv), flush=True)
    p = subprocess.run(list(argv), cwd=cwd, text=True, input=stdin, check=False,
                       stdout=subprocess.PIPE if capture else None)
    if p.returncode != 0 and p.returncode not in also_ok:
        raise StepFailed(argv, p.returncode)
    return p.returncode, p.stdout or ""


def run(argv: Sequence[str], *, capture: bool = False, stdin: str | None = None, cwd: Path = REPO) -> str:
    return run_step(argv, capture=capture, stdin=stdin, cwd=cwd)[1]


def written_repositories(listing: str) -> list[tuple[str, str]]:
    """``pool<TAB>directory`` lines of deploy.model_repositories -> [(pool, directory)]."""
    out = []
    for line in listing.splitlines():
        pool, sep, path = line.partition("\t")
        if not sep or not pool or not path:
            raise ValueError(f"deploy.model_repositories printed {line!r}, not 'pool<TAB>directory'")
        out.append((pool, path))
    return out


def terraform(*args: str, capture: bool = False) -> str:
    tf = preflight.terraform_command(preflight.SystemProbe())
    assert tf is not None  # preflight checked
    return run([*tf, f"-chdir={TERRAFORM_DIR}", *args], capture=capture)


def terraform_init(state_bucket: str) -> None:
    terraform("init", "-input=false", f"-backend-config=bucket={state_bucket}")


def terraform_outputs() -> dict[str, object]:
    return json.loads(terraform("output", "-json", capture=True))  # type: ignore[no-any-return]


def git_revision() -> str:
    return run(["git", "rev-parse", "--short=12", "HEAD"], capture=True).strip()


def image_tag(revision: str, now_s: float) -> str:
    """ECR tags are immutable (terraform/ecr.tf): a re-run of the same commit must not reuse a tag
    (the push would fail). The manifests pin the digest anyway; the tag says what was built, when."""
    return f"{revision}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(now_s))}"


def build_and_push_images(repos: dict[str, str], region: str) -> dict[str, str]:
    """Builds every image in triton_images/ for its platform, pushes it, returns name -> digest."""
    registry = next(iter(repos.values())).split("/", 1)[0]
    password = run(["aws", "ecr", "get-login-password", "--region", region], capture=True)
    run(["docker", "login", "--username", "AWS", "--password-stdin", registry], stdin=password)
    tag = image_tag(git_revision(), time.time())
    digests = {}
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    for name, directory in IMAGE_DIRS.items():
        metadata = BUILD_DIR / f"{name}.metadata.json"
        run(["docker", "buildx", "build", "--platform", IMAGE_PLATFORMS[name], "--push",
             "--tag", f"{repos[name]}:{tag}", "--metadata-file", str(metadata),
             "--file", f"{directory}/Dockerfile", "."])
        digests[name] = json.loads(metadata.read_text())["containerimage.digest"]
    return digests


def write_account_layer(outputs: dict[str, object], digests: dict[str, str], environment: str) -> Path:
    target = BUILD_DIR / environment
    target.mkdir(parents=True, exist_ok=True)
    overlay = Path("..", "..", "..", "k8s", "overlays", environment).as_posix()
    (target / "kustomization.yaml").write_text(yaml.safe_dump(account_layer(outputs, digests, overlay), sort_keys=False))
    return target


def apply_manifests(layer: Path) -> None:
    rendered = run(["kubectl", "kustomize", "--load-restrictor", "LoadRestrictionsNone", str(layer)], capture=True)
    # Server-side apply: the CRDs' owners (Karpenter, KEDA, ...) merge fields the same way.
    run(["kubectl", "apply", "--server-side", "--field-manager=inference-platform", "-f", "-"], stdin=rendered)


def deploy_all(state_bucket: str) -> int:
    terraform_init(state_bucket)
    terraform("apply", "-input=false", "-auto-approve")
    outputs = terraform_outputs()
    value = {k: v["value"] for k, v in outputs.items()}  # type: ignore[index]
    run(["aws", "eks", "update-kubeconfig", "--name", str(value["cluster_name"]), "--region", str(value["region"])])
    digests = build_and_push_images(value["ecr_repository_urls"], str(value["region"]))  # type: ignore[arg-type]
    layer = write_account_layer(outputs, digests, str(value["environment"]))
    apply_manifests(layer)
    print(f"deployed: cluster {value['cluster_name']} ({value['environment']}). Next: make deploy-models")
    return 0


def deploy_models(state_bucket: str, pools: list[str] | None) -> int:
    terraform_init(state_bucket)
    outputs = {k: v["value"] for k, v in terraform_outputs().items()}  # type: ignore[index]
    bucket = outputs["model_bucket_name"]
    # Builds each pool's Triton repository with the model_repository package (main venv).
    # Exit 3: some pools refused (their hardware-made artifacts are missing); the others were
    # written and are uploaded all the same, then the command fails naming the refused ones.
    code, repos = run_step([str(REPO / ".venv" / "bin" / "python"), "-m", "deploy.model_repositories",
                            "--fleet", str(K8S_FLEET), "--out", str(BUILD_DIR / "model_repositories"),
                            *(["--pools", *pools] if pools else [])], capture=True, also_ok=(3,))
    partial = code == 3
    uploaded = []
    for pool, path in written_repositories(repos):
        # --follow-symlinks is the default; said anyway: the repository must hold files, not links.
        run(["aws", "s3", "sync", "--delete", "--follow-symlinks", "--only-show-errors", path, f"s3://{bucket}/{pool}/"])
        uploaded.append(pool)
    print(f"models uploaded for {', '.join(uploaded) or 'no pool'}; Triton polls nothing: restart the pools to "
          "load them: kubectl -n inference rollout restart deploy -l app.kubernetes.io/name=triton")
    if partial:
        print("some pools were refused (listed above); build their artifacts and rerun make deploy-models",
              file=sys.stderr)
        return 3
    return 0


def open_grafana(port: int) -> int:
    print(f"Grafana: http://127.0.0.1:{port}  (user admin; password: kubectl -n monitoring get secret "
          "kube-prometheus-stack-grafana -o jsonpath='{.data.admin-password}' | base64 -d)", flush=True)
    run(["kubectl", "-n", "monitoring", "port-forward", "svc/kube-prometheus-stack-grafana", f"{port}:80"])
    return 0


def main(argv: list[str] | None = None, probe: preflight.Probe | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("deploy-all")
    models = sub.add_parser("deploy-models")
    models.add_argument("--pools", nargs="*", help="only these pools (default: every pool in the k8s fleet)")
    grafana = sub.add_parser("open-grafana")
    grafana.add_argument("--port", type=int, default=3000)
    args = parser.parse_args(argv)

    probe = probe or preflight.SystemProbe()
    found = preflight.problems(args.command, probe)
    if found:
        print(preflight.refusal(args.command, found), file=sys.stderr)
        return 2
    try:
        if args.command == "deploy-all":
            return deploy_all(str(probe.env("TF_STATE_BUCKET")))
        if args.command == "deploy-models":
            return deploy_models(str(probe.env("TF_STATE_BUCKET")), args.pools)
        return open_grafana(args.port)
    except StepFailed as e:
        print(e, file=sys.stderr)
        return e.code or 1


if __name__ == "__main__":
    sys.exit(main())
