"""A second implementation of rft.grader.v1, in Node.js (examples/node-grader), passes
the conformance suite's non-python cases: customers can swap in their own grader."""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest
from service_process import free_port

REPO = pathlib.Path(__file__).resolve().parents[2]
NODE_GRADER = REPO / "examples" / "node-grader"


@pytest.fixture(scope="module")
def node_grader():
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are not installed")
    if not (NODE_GRADER / "node_modules").is_dir():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_GRADER, check=True, capture_output=True, timeout=300
        )
    port = free_port()
    proc = subprocess.Popen(
        ["node", "server.js", "--host", "127.0.0.1", "--port", str(port)],
        cwd=NODE_GRADER,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        line = proc.stdout.readline()  # the server prints one line once it listens
        assert "listening on" in line, line + proc.stdout.read()
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_node_grader_passes_the_conformance_suite(node_grader: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/grader/conformance", "-q", "-rs", "-m", "not python_grader"],
        cwd=REPO,
        env={**os.environ, "RFT_GRADER_CONFORMANCE_ADDRESS": node_grader},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = result.stdout.strip().splitlines()[-1]
    passed = int(re.search(r"(\d+) passed", summary).group(1))
    assert passed >= 15, summary
    # It ran against the Node server (which lacks text_similarity), not one of ours.
    assert "text_similarity is not enabled on the server under test" in result.stdout
