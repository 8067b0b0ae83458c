"""Policy over the rendered overlays: what every container must have, the grader's
hardening, GPUs, the shared volume, the headless Service, the learner's HTTP API and the
env the services read."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys

import pytest
from rft_deploy_testlib import DEPLOY, OVERLAYS, env_of, find, one, pod_labels, pod_spec, selects, workloads

GRPC_PORTS = {"rollout": 50051, "grader": 50052, "learner": 50053}
LEARNER_HTTP_PORT = 8080
HEALTH_SERVICES = {
    "rollout": "rft.rollout.v1.RolloutService",
    "grader": "rft.grader.v1.GraderService",
    "learner": "rft.learner.v1.FineTuningService",
}
CONFIGS = {
    "RFT_ROLLOUT_": ("rft_rollout.config", "RolloutConfig"),
    "RFT_GRADER_": ("rft_grader.config", "GraderConfig"),
    "RFT_LEARNER_": ("rft_learner.config", "LearnerConfig"),
}


def containers(objects):
    for workload in workloads(objects):
        spec = pod_spec(workload)
        for container in spec.get("initContainers", []) + spec["containers"]:
            yield workload, spec, container


def probe_checks_health(probe: dict, port: int, service: str | None) -> bool:
    """A native gRPC probe on the gRPC port, or the TLS exec probe on the same port."""
    if "grpc" in probe:
        return probe["grpc"]["port"] == port and (service is None or probe["grpc"].get("service") == service)
    command = probe.get("exec", {}).get("command", [])
    if command[:1] != ["rft-grpc-health"]:
        return False
    args = dict(zip(command[1::2], command[2::2], strict=False))
    return args.get("--port") == str(port) and (service is None or args.get("--service") == service)


@pytest.mark.parametrize("overlay", [*OVERLAYS, "base"])
def test_every_container_has_probes_limits_and_a_non_root_user(rendered, overlay):
    problems = []
    for workload, spec, container in containers(rendered[overlay]):
        where = f"{workload['metadata']['name']}/{container['name']}"
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if probe not in container:
                problems.append(f"{where}: no {probe}")
        resources = container.get("resources", {})
        for kind in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                if resource not in resources.get(kind, {}):
                    problems.append(f"{where}: no {kind}.{resource}")
        pod_sc, sc = spec.get("securityContext", {}), container.get("securityContext", {})
        run_as_non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
        run_as_user = sc.get("runAsUser", pod_sc.get("runAsUser"))
        if run_as_non_root is not True or not run_as_user:
            problems.append(f"{where}: runAsNonRoot={run_as_non_root} runAsUser={run_as_user}")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: allowPrivilegeEscalation not false")
        if sc.get("capabilities", {}).get("drop") != ["ALL"] or sc.get("capabilities", {}).get("add"):
            problems.append(f"{where}: capabilities not drop [ALL]")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{where}: root filesystem writable")
        seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{where}: seccomp {seccomp}")
        if sc.get("privileged"):
            problems.append(f"{where}: privileged")
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{where}: service account token mounted")
        if spec.get("hostNetwork") or spec.get("hostPID") or spec.get("hostIPC"):
            problems.append(f"{where}: shares a host namespace")
        if any("hostPath" in v for v in spec.get("volumes", [])):
            problems.append(f"{where}: hostPath volume")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("overlay", [*OVERLAYS, "base"])
def test_probes_call_grpc_health_on_the_grpc_port(rendered, overlay):
    for name, port in GRPC_PORTS.items():
        deployment = one(rendered[overlay], "Deployment", f"rft-{name}")
        container = pod_spec(deployment)["containers"][0]
        assert {"name": "grpc", "containerPort": port} in container["ports"]
        assert env_of(container)[f"RFT_{name.upper()}_PORT"] == str(port)
        assert probe_checks_health(container["readinessProbe"], port, HEALTH_SERVICES[name]), name
        assert probe_checks_health(container["livenessProbe"], port, None), name
        assert probe_checks_health(container["startupProbe"], port, None), name
        grace = float(env_of(container)[f"RFT_{name.upper()}_GRACE_SECONDS"])
        assert pod_spec(deployment)["terminationGracePeriodSeconds"] > grace, "SIGTERM drain cut short"


def test_cpu_dev_uses_native_grpc_probes_and_gpu_uses_tls(rendered):
    for name in GRPC_PORTS:
        dev = pod_spec(one(rendered["cpu-dev"], "Deployment", f"rft-{name}"))["containers"][0]
        assert "grpc" in dev["readinessProbe"] and "grpc" in dev["livenessProbe"]
        gpu = pod_spec(one(rendered["gpu"], "Deployment", f"rft-{name}"))["containers"][0]
        env = env_of(gpu)
        assert env[f"RFT_{name.upper()}_TLS_CERT_FILE"] and env[f"RFT_{name.upper()}_AUTH_TOKEN_FILE"]
        if name == "learner":  # and its clients of rollout and grader verify and authenticate
            assert env["RFT_LEARNER_TLS_CA_FILE"] == "/etc/rft/tls/ca.crt"
            assert (
                env["RFT_LEARNER_ROLLOUT_TOKEN_FILE"] == env["RFT_LEARNER_GRADER_TOKEN_FILE"] == "/etc/rft/auth/token"
            )
        # kubelet's gRPC probes speak plaintext only: with TLS they must be exec probes.
        assert "grpc" not in gpu["readinessProbe"] and "--ca-file" in gpu["readinessProbe"]["exec"]["command"]
    # The token the learner sends is the token rollout and grader require: one Secret.
    secrets = set()
    for name in GRPC_PORTS:
        spec = pod_spec(one(rendered["gpu"], "Deployment", f"rft-{name}"))
        (auth,) = [v for v in spec["volumes"] if v["name"] == "auth"]
        (mount,) = [m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "auth"]
        assert mount["mountPath"] == "/etc/rft/auth"
        secrets.add(auth["secret"]["secretName"])
    assert len(secrets) == 1


def _grader(objects):
    deployment = one(objects, "Deployment", "rft-grader")
    return deployment, pod_spec(deployment), pod_spec(deployment)["containers"][0]


@pytest.mark.parametrize("overlay", [*OVERLAYS, "base"])
def test_grader_hardening(rendered, overlay):
    objects = rendered[overlay]
    deployment, spec, container = _grader(objects)
    sc, pod_sc = container["securityContext"], spec["securityContext"]
    assert sc["runAsNonRoot"] is True and pod_sc["runAsUser"] != 0
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False and sc["privileged"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert spec["automountServiceAccountToken"] is False
    account = one(objects, "ServiceAccount", spec["serviceAccountName"])
    assert account["automountServiceAccountToken"] is False
    assert not any("persistentVolumeClaim" in v for v in spec["volumes"]), "grader code must not reach job data"
    sandbox = env_of(container)["RFT_GRADER_SANDBOX_MODE"]
    if overlay == "cpu-dev":
        # No gVisor: bubblewrap is the jail, with the node profiles it needs.
        assert "runtimeClassName" not in spec
        assert sandbox == "bwrap"
        assert pod_sc["seccompProfile"] == {"type": "Localhost", "localhostProfile": "rft/grader-bubblewrap.json"}
        assert sc["appArmorProfile"] == {"type": "Localhost", "localhostProfile": "rft-grader-bubblewrap"}
    else:
        # gVisor is the jail: the weaker in-process sandbox mode is only allowed there.
        assert spec["runtimeClassName"] == "gvisor"
        assert sandbox == "unjailed"
        assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sandbox != "unjailed" or spec.get("runtimeClassName") == "gvisor", "unjailed without gVisor"


@pytest.mark.parametrize("overlay", [*OVERLAYS, "base"])
def test_grader_network_policy_denies_egress_and_admits_only_the_learner(rendered, overlay):
    objects = rendered[overlay]
    _, _, grader = _grader(objects)
    learner_labels = pod_labels(one(objects, "Deployment", "rft-learner"))
    grader_labels = pod_labels(one(objects, "Deployment", "rft-grader"))
    policies = [
        p for p in find(objects, "NetworkPolicy") if selects(p["spec"]["podSelector"]["matchLabels"], grader_labels)
    ]
    assert len(policies) == 1
    spec = policies[0]["spec"]
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
    assert spec.get("egress", []) == [], "the grader must have no egress at all"
    grpc_port = GRPC_PORTS["grader"]
    metrics_port = int(env_of(grader)["RFT_GRADER_METRICS_PORT"])
    grpc_rules = [r for r in spec["ingress"] if any(p["port"] == grpc_port for p in r.get("ports", []))]
    assert len(grpc_rules) == 1
    (peer,) = grpc_rules[0]["from"]
    assert set(peer) == {"podSelector"}, "gRPC only from pods of this namespace, no ipBlock or namespaceSelector"
    assert selects(peer["podSelector"]["matchLabels"], learner_labels)
    for other in find(objects, "Deployment"):
        if other["metadata"]["name"] != "rft-learner":
            assert not selects(peer["podSelector"]["matchLabels"], pod_labels(other)), other["metadata"]["name"]
    for rule in spec["ingress"]:
        assert rule.get("ports"), "an ingress rule without ports admits every port"
        assert {p["port"] for p in rule["ports"]} <= {grpc_port, metrics_port}
        if rule is not grpc_rules[0]:
            assert {p["port"] for p in rule["ports"]} == {metrics_port}, "only Prometheus, only /metrics"


def test_gpu_overlay_gives_rollout_and_learner_gpus(rendered):
    for name in ["rollout", "learner"]:
        gpu = pod_spec(one(rendered["gpu"], "Deployment", f"rft-{name}"))
        assert int(gpu["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]) >= 1
        assert any(t["key"] == "nvidia.com/gpu" for t in gpu["tolerations"])
        dev = pod_spec(one(rendered["cpu-dev"], "Deployment", f"rft-{name}"))
        assert "nvidia.com/gpu" not in dev["containers"][0]["resources"]["limits"]
    grader = pod_spec(one(rendered["gpu"], "Deployment", "rft-grader"))
    assert "nvidia.com/gpu" not in grader["containers"][0]["resources"]["limits"]
    assert one(rendered["cpu-dev"], "Deployment", "rft-rollout")["spec"]["replicas"] == 1
    assert one(rendered["gpu"], "Deployment", "rft-rollout")["spec"]["replicas"] > 1


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_learner_and_rollout_share_the_data_volume(rendered, overlay):
    objects = rendered[overlay]
    mounts = {}
    for name in ["learner", "rollout"]:
        spec = pod_spec(one(objects, "Deployment", f"rft-{name}"))
        (claim,) = [v for v in spec["volumes"] if "persistentVolumeClaim" in v]
        (mount,) = [m for m in spec["containers"][0]["volumeMounts"] if m["name"] == claim["name"]]
        mounts[name] = (claim["persistentVolumeClaim"]["claimName"], mount["mountPath"], mount.get("readOnly", False))
    assert mounts["learner"][:2] == mounts["rollout"][:2], "same claim at the same path: model paths agree"
    assert mounts["learner"][2] is False and mounts["rollout"][2] is True
    claim = one(objects, "PersistentVolumeClaim", mounts["learner"][0])
    expected = ["ReadWriteOnce"] if overlay == "cpu-dev" else ["ReadWriteMany"]
    assert claim["spec"]["accessModes"] == expected
    rollout_env = env_of(pod_spec(one(objects, "Deployment", "rft-rollout"))["containers"][0])
    assert rollout_env["RFT_ROLLOUT_MODEL"].startswith(mounts["rollout"][1] + "/")
    learner = one(objects, "Deployment", "rft-learner")
    assert learner["spec"]["replicas"] == 1 and learner["spec"]["strategy"]["type"] == "Recreate"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_learner_reaches_rollout_replicas_through_the_headless_service(rendered, overlay):
    objects = rendered[overlay]
    headless = one(objects, "Service", "rft-rollout-headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert not headless["spec"].get("publishNotReadyAddresses"), "only SERVING replicas get weights and prompts"
    assert selects(headless["spec"]["selector"], pod_labels(one(objects, "Deployment", "rft-rollout")))
    assert [p["port"] for p in headless["spec"]["ports"]] == [GRPC_PORTS["rollout"]]
    env = env_of(pod_spec(one(objects, "Deployment", "rft-learner"))["containers"][0])
    assert env["RFT_LEARNER_ROLLOUT_ADDRESSES"] == f"dns:///rft-rollout-headless:{GRPC_PORTS['rollout']}"
    grader_host, grader_port = env["RFT_LEARNER_GRADER_ADDRESS"].split(":")
    grader_service = one(objects, "Service", grader_host)
    assert int(grader_port) in [p["port"] for p in grader_service["spec"]["ports"]]


@pytest.mark.parametrize("overlay", [*OVERLAYS, "base"])
def test_learner_serves_the_http_api_through_its_service(rendered, overlay):
    objects = rendered[overlay]
    deployment = one(objects, "Deployment", "rft-learner")
    container = pod_spec(deployment)["containers"][0]
    assert {"name": "http", "containerPort": LEARNER_HTTP_PORT} in container["ports"]
    assert env_of(container)["RFT_LEARNER_HTTP_PORT"] == str(LEARNER_HTTP_PORT)
    assert env_of(container).get("RFT_LEARNER_HTTP_HOST", "0.0.0.0") == "0.0.0.0", "the Service must reach it"
    service = one(objects, "Service", "rft-learner")
    assert selects(service["spec"]["selector"], pod_labels(deployment))
    assert {"name": "http", "port": LEARNER_HTTP_PORT, "targetPort": "http"} in service["spec"]["ports"]
    if overlay == "gpu":  # the HTTP API serves HTTPS with the learner's certificate
        assert env_of(container)["RFT_LEARNER_TLS_CERT_FILE"] and env_of(container)["RFT_LEARNER_TLS_KEY_FILE"]


def test_gpu_learner_reads_api_keys_from_a_secret(rendered):
    objects = rendered["gpu"]
    spec = pod_spec(one(objects, "Deployment", "rft-learner"))
    container = spec["containers"][0]
    keys_file = env_of(container)["RFT_LEARNER_API_KEYS_FILE"]
    (mount,) = [m for m in container["volumeMounts"] if keys_file.startswith(m["mountPath"] + "/")]
    assert mount.get("readOnly") is True
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    secret = one(objects, "Secret", volume["secret"]["secretName"])
    assert keys_file.rsplit("/", 1)[1] in secret["data"]
    assert volume["secret"]["secretName"].startswith("rft-learner-api-keys")
    for dev in ("cpu-dev", "base"):  # no keys there: the namespace's NetworkPolicies and loopback
        assert "RFT_LEARNER_API_KEYS_FILE" not in env_of(
            pod_spec(one(rendered[dev], "Deployment", "rft-learner"))["containers"][0]
        )


def test_make_secrets_api_key_belongs_to_its_tenant(tmp_path):
    """The printed key resolves to the tenant through the learner's own keys-file reader;
    the file holds only the digest, and a second run keeps it."""
    api_keys = pytest.importorskip("rft_common.api_keys")
    script = DEPLOY / "k8s" / "make_secrets.py"
    run = [sys.executable, str(script), str(tmp_path / "s"), "--tenant", "alice"]
    out = subprocess.run(run, check=True, capture_output=True, text=True).stdout
    (key,) = re.findall(r"\bsk-\S+", out)
    text = (tmp_path / "s" / "api-keys").read_text()
    assert key not in text
    keys = api_keys.ApiKeys.load(str(tmp_path / "s" / "api-keys"))
    assert keys.tenant_for(key) == "alice" and keys.tenant_for(key + "x") is None
    again = subprocess.run(run, check=True, capture_output=True, text=True).stdout
    assert "sk-" not in again and (tmp_path / "s" / "api-keys").read_text() == text


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_disruption_budgets_and_grader_autoscaling(rendered, overlay):
    objects = rendered[overlay]
    for name in GRPC_PORTS:
        budget = one(objects, "PodDisruptionBudget", f"rft-{name}")
        assert selects(budget["spec"]["selector"]["matchLabels"], pod_labels(one(objects, "Deployment", f"rft-{name}")))
    hpa = one(objects, "HorizontalPodAutoscaler", "rft-grader")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "rft-grader"}
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    grader_budget = one(objects, "PodDisruptionBudget", "rft-grader")["spec"]
    if "minAvailable" in grader_budget:
        assert grader_budget["minAvailable"] < hpa["spec"]["minReplicas"], "a budget that blocks every drain"


@pytest.mark.parametrize("overlay", [*OVERLAYS, "base"])
def test_every_rft_setting_is_one_the_service_reads(rendered, overlay):
    """An RFT_<SERVICE>_<FIELD> variable whose field does not exist is silently ignored."""
    fields = {}
    for prefix, (module, cls) in CONFIGS.items():
        model = getattr(importlib.import_module(module), cls)
        fields[prefix] = {prefix + name.upper() for name in model.model_fields}
    assert {"RFT_GRADER_SANDBOX_MODE", "RFT_LEARNER_ROLLOUT_ADDRESSES", "RFT_ROLLOUT_MODEL"} <= set().union(
        *fields.values()
    ), "the config models were not read"
    unknown = []
    for workload, _, container in containers(rendered[overlay]):
        for name in env_of(container):
            prefix = next((p for p in CONFIGS if name.startswith(p)), None)
            if prefix and name not in fields[prefix]:
                unknown.append(f"{workload['metadata']['name']}: {name}")
    assert not unknown, f"not a config field of the service: {unknown}"
