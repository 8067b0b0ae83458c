"""Where the console tests find the repository and Debian's chromium, and the flags it
runs with. A module of its own (not conftest): several test folders have a conftest, and
`from conftest import ...` would get whichever was loaded first."""

from __future__ import annotations

import os
import pathlib
import shutil

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
DEMO_MODEL = REPO / "models" / "demo-base"
CHROMIUM_FLAGS = [
    "--no-sandbox",  # tests run as root in CI containers
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",  # the machine has no internet: no update pings
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    found = os.environ.get("RFT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail("no chromium on PATH: `make install` installs Debian's chromium package (apt-packages.txt)")
    return found
