"""The TLS exec probe (deploy/docker/rft_grpc_health.py) against a real service serving
TLS with the certificates make_secrets.py writes, as components/tls configures it. The
learner stands in for all three (same server library; it starts in seconds)."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import time

import pytest
from rft_deploy_testlib import DEPLOY
from service_process import ServiceProcess

PROBE = DEPLOY / "docker" / "rft_grpc_health.py"
MAKE_SECRETS = DEPLOY / "k8s" / "make_secrets.py"


def probe(port: int, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(PROBE), "--port", str(port), *args], capture_output=True, text=True, timeout=30
    )


@pytest.fixture(scope="module")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    root = tmp_path_factory.mktemp("tls")
    for name in ("good", "other"):
        subprocess.run([sys.executable, str(MAKE_SECRETS), str(root / name)], check=True, capture_output=True)
    return {"good": root / "good", "other": root / "other"}


@pytest.fixture(scope="module")
def tls_learner(secrets, tmp_path_factory: pytest.TempPathFactory):
    good = secrets["good"]
    args = ["--data-dir", str(tmp_path_factory.mktemp("learner"))]
    args += ["--tls-cert-file", str(good / "learner.crt"), "--tls-key-file", str(good / "learner.key")]
    args += ["--auth-token-file", str(good / "token")]
    with ServiceProcess("rft-learner", args, wait_serving=False) as learner:
        deadline = time.monotonic() + 60
        while probe(learner.port, "--ca-file", str(good / "ca.crt"), "--server-name", "rft-learner").returncode:
            assert learner.proc.poll() is None, learner.logs()
            assert time.monotonic() < deadline, learner.logs()
            time.sleep(0.3)
        yield learner


def test_probe_passes_over_tls_with_the_service_ca(tls_learner, secrets):
    ca = str(secrets["good"] / "ca.crt")
    for service in ("", "rft.learner.v1.FineTuningService"):
        result = probe(tls_learner.port, "--ca-file", ca, "--server-name", "rft-learner", "--service", service)
        assert result.returncode == 0, result.stderr
    # Every name the certificate carries for the Service works (kubelet dials 127.0.0.1).
    result = probe(tls_learner.port, "--ca-file", ca, "--server-name", "rft-learner.rft.svc.cluster.local")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "case",
    ["wrong CA", "wrong server name", "plaintext to a TLS port", "unknown service"],
)
def test_probe_fails_when_it_should(tls_learner, secrets, case):
    good, other = secrets["good"] / "ca.crt", secrets["other"] / "ca.crt"
    args = {
        "wrong CA": ["--ca-file", str(other), "--server-name", "rft-learner"],
        "wrong server name": ["--ca-file", str(good), "--server-name", "rft-grader"],
        "plaintext to a TLS port": [],
        "unknown service": ["--ca-file", str(good), "--server-name", "rft-learner", "--service", "no.such.Service"],
    }[case]
    result = probe(tls_learner.port, *args, "--timeout", "3")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(("UNREACHABLE", "NOT_FOUND", "SERVICE_UNKNOWN"))
