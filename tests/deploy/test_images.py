"""Every Dockerfile lints clean (hadolint) and passes checkov; the images are the ones k8s runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from deploy.overlay_inputs import IMAGE_DIRS
from tests.deploy.conftest import REPO, deploy_tool, run

DOCKERFILES = sorted((REPO / "triton_images").glob("*/Dockerfile"))


def test_there_is_one_image_per_component() -> None:
    assert {str(p.parent.relative_to(REPO)) for p in DOCKERFILES} == set(IMAGE_DIRS.values())


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_hadolint_is_clean(dockerfile: Path) -> None:
    p = run([deploy_tool("hadolint"), "--config", REPO / "triton_images" / ".hadolint.yaml", dockerfile])
    assert p.returncode == 0, p.stdout + p.stderr


def test_checkov_passes_every_dockerfile() -> None:
    p = run([deploy_tool("checkov"), "--skip-download", "--quiet", "--compact", "--framework", "dockerfile",
             "-d", REPO / "triton_images"])
    assert p.returncode == 0, p.stdout[-4000:]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_images_are_pinned_non_root_and_health_checked(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    bases = re.findall(r"^FROM\s+(\S+)", text, flags=re.M)
    assert bases and all(":" in b and not b.endswith(":latest") for b in bases), bases
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.M)
    assert users and users[-1].split(":")[0] not in ("0", "root"), f"last USER is {users[-1:]}"
    assert re.search(r"^HEALTHCHECK\s", text, flags=re.M)
    assert not re.search(r"(?i)(aws_secret_access_key|password|token)\s*=", text), "no secrets in images"


def test_the_three_triton_images_share_one_triton_release() -> None:
    bases = {re.search(r"^FROM\s+(\S+)", (REPO / d / "Dockerfile").read_text(), flags=re.M).group(1)  # type: ignore[union-attr]
             for name, d in IMAGE_DIRS.items() if name.startswith("triton-")}
    assert len(bases) == 1, bases
