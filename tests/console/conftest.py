"""Fixtures of the web console tests: the three services on loopback (the learner serving
the built console and its API with two tenants' keys) and headless Chromium from Debian's
package, driven by Playwright (no browser download)."""

from __future__ import annotations

import os
import pathlib
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "learner"))
sys.path.insert(0, str(REPO / "tests" / "console"))

from console_browser import CHROMIUM_FLAGS, DEMO_MODEL, chromium_path  # noqa: E402
from jobs_client import learner_args  # noqa: E402
from service_process import ServiceProcess  # noqa: E402
from tenant_keys import write_keys_file  # noqa: E402


@pytest.fixture(scope="session")
def console_built() -> pathlib.Path:
    dist = REPO / "console" / "dist"
    if not (dist / "index.html").is_file():
        pytest.fail("console/dist is missing: `make install` builds the console (npm ci + vite build)")
    return dist


@pytest.fixture(scope="module")
def services(console_built, tmp_path_factory):
    """Rollout (demo-base), grader and learner; the learner's API at .base_url."""
    workdir = tmp_path_factory.mktemp("console")
    keys = write_keys_file(workdir / "api-keys")
    with (
        ServiceProcess("rft-rollout", ["--model", str(DEMO_MODEL)], ready_timeout=300) as rollout,
        ServiceProcess("rft-grader", ["--data-dir", str(workdir / "grader")]) as grader,
    ):
        args = learner_args(workdir / "learner", rollout, grader, checkpoint_interval=4)
        args += ["--api-keys-file", str(keys), "--model-catalogue", f"demo-base={DEMO_MODEL}"]
        args += ["--inference-max-models", "2", "--inference-kv-cache-gib", "1"]
        with ServiceProcess("rft-learner", args) as learner:
            yield learner


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> pathlib.Path:
    """Where page screenshots go: $RFT_SCREENSHOTS_DIR (docs/console for the README's), else a temp dir."""
    target = os.environ.get("RFT_SCREENSHOTS_DIR")
    path = pathlib.Path(target) if target else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path
