"""The gpu-multinode overlay: the learner as a LeaderWorkerSet of torchrun nodes.

Rendered by real kustomize, like the other overlays, and checked offline:

- built-in kinds strictly against the Kubernetes schemas (kubernetes-validate), the
  LeaderWorkerSet against the subset of its CRD schema written below (the fields of
  leaderworkerset.x-k8s.io/v1 as LWS v0.10.0 defines them, unknown fields rejected), and
  its two pod templates strictly as core/v1 PodTemplates;
- what a user would notice: the pods' command is a torchrun invocation torchrun itself
  accepts, whose rendezvous is the leader's stable DNS name and which puts rank 0 (the
  service) on the leader; the Service and probes reach the leader only; world size =
  nodes x GPUs; the NetworkPolicy lets ranks reach each other on any port but keeps
  other pods off the rendezvous port; and the rendered command, run here with two local
  "pods" on CPU, forms the group and serves from the leader.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
from rft_deploy_testlib import BIN, find, one, pod_spec, render, selects
from test_manifests import K8S_VERSION, validate

OVERLAY = "gpu-multinode"
LWS_KIND = "LeaderWorkerSet"
LWS_API = "leaderworkerset.x-k8s.io/v1"
RENDEZVOUS_PORT = 29400
API_PORTS = (50053, 8080)
METRICS_PORT = 9103

# Subset of the LeaderWorkerSet CRD's openAPIV3Schema, written from
# https://github.com/kubernetes-sigs/lws/blob/v0.10.0/config/crd/bases/leaderworkerset.x-k8s.io_leaderworkersets.yaml
# (LWS v0.10.0): every spec field with its type and enum, unknown fields rejected. The
# pod templates (core/v1 PodTemplateSpec in the CRD) are validated by kubernetes-validate.
_INT_OR_STRING = {"anyOf": [{"type": "integer"}, {"type": "string"}]}
_POD_TEMPLATE = {"type": "object", "required": ["spec"], "properties": {"metadata": {}, "spec": {"type": "object"}}}
LWS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": LWS_API},
        "kind": {"const": LWS_KIND},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
                "namespace": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "spec": {
            "type": "object",
            "required": ["leaderWorkerTemplate"],
            "additionalProperties": False,
            "properties": {
                "replicas": {"type": "integer", "minimum": 0, "maximum": 1000000},
                "startupPolicy": {"enum": ["LeaderCreated", "LeaderReady"]},
                "networkConfig": {
                    "type": "object",
                    "required": ["subdomainPolicy"],
                    "additionalProperties": False,
                    "properties": {"subdomainPolicy": {"enum": ["Shared", "UniquePerReplica"]}},
                },
                "rolloutStrategy": {
                    "type": "object",
                    "required": ["type"],
                    "additionalProperties": False,
                    "properties": {
                        "type": {"enum": ["RollingUpdate"]},
                        "rollingUpdateConfiguration": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "maxSurge": _INT_OR_STRING,
                                "maxUnavailable": _INT_OR_STRING,
                                "partition": {"type": "integer"},
                            },
                        },
                    },
                },
                "leaderWorkerTemplate": {
                    "type": "object",
                    "required": ["workerTemplate"],
                    "additionalProperties": False,
                    "properties": {
                        "size": {"type": "integer", "minimum": 1},
                        "restartPolicy": {
                            "enum": ["Default", "RecreateGroupOnPodRestart", "RecreateGroupAfterStart", "None"]
                        },
                        "leaderTemplate": _POD_TEMPLATE,
                        "workerTemplate": _POD_TEMPLATE,
                        "subGroupPolicy": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "subGroupPolicyType": {"enum": ["LeaderWorker", "LeaderExcluded"]},
                                "subGroupSize": {"type": "integer"},
                            },
                        },
                        "volumeClaimTemplates": {"type": "array"},
                        "persistentVolumeClaimRetentionPolicy": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {"whenDeleted": {"type": "string"}, "whenScaled": {"type": "string"}},
                        },
                    },
                },
            },
        },
    },
}


def validate_lws(lws: dict[str, Any]) -> None:
    """Raise if the LeaderWorkerSet or one of its pod templates is invalid."""
    jsonschema.validate(lws, LWS_SCHEMA)
    for role, template in templates(lws).items():
        pod_template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": role}, "template": template}
        kubernetes_validate.validate(pod_template, K8S_VERSION, strict=True)


def templates(lws: dict[str, Any]) -> dict[str, dict[str, Any]]:
    spec = lws["spec"]["leaderWorkerTemplate"]
    return {"leader": spec["leaderTemplate"], "worker": spec["workerTemplate"]}


@pytest.fixture(scope="module")
def objects(deploy_copy) -> list[dict[str, Any]]:
    return render(deploy_copy / "k8s" / "overlays" / OVERLAY)


@pytest.fixture(scope="module")
def lws(objects) -> dict[str, Any]:
    (found,) = find(objects, LWS_KIND)
    return found


def container(lws: dict[str, Any], role: str) -> dict[str, Any]:
    (learner,) = templates(lws)[role]["spec"]["containers"]
    return learner


def lws_env(lws: dict[str, Any], worker_index: int) -> dict[str, str]:
    """The variables the LWS controller injects into a pod of group 0 (pod_utils.go,
    AddLWSVariables: the leader's address is <name>-<group>.<subdomain>.<namespace>, the
    subdomain being the headless Service named after the set)."""
    name, namespace = lws["metadata"]["name"], lws["metadata"]["namespace"]
    return {
        "LWS_LEADER_ADDRESS": f"{name}-0.{name}.{namespace}",
        "LWS_GROUP_SIZE": str(lws["spec"]["leaderWorkerTemplate"]["size"]),
        "LWS_WORKER_INDEX": str(worker_index),
    }


def expand(argv: list[str], variables: dict[str, str]) -> list[str]:
    """Kubernetes' $(VAR) expansion of a container's command and args."""
    return [re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: variables.get(m[1], m[0]), arg) for arg in argv]


def torchrun_args(lws: dict[str, Any], role: str, worker_index: int):
    """The pod's command as torchrun parses it (its own argument parser)."""
    from torch.distributed.run import get_args_parser

    learner = container(lws, role)
    assert learner["command"] == ["torchrun"], learner["command"]
    argv = expand(learner["args"], lws_env(lws, worker_index))
    assert not [arg for arg in argv if "$(" in arg], f"unexpanded variables: {argv}"
    return get_args_parser().parse_args(argv)


def gpus(learner: dict[str, Any]) -> int:
    return int(learner["resources"]["limits"]["nvidia.com/gpu"])


# ---- schemas and references ----


def test_the_overlay_validates_against_schemas(objects) -> None:
    problems = []
    for obj in objects:
        try:
            validate_lws(obj) if obj["kind"] == LWS_KIND else validate(obj)
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as exc:
            problems.append(f"{obj['kind']}/{obj['metadata']['name']}: {str(exc).splitlines()[0]}")
    assert not problems, "\n".join(problems)
    assert {o["metadata"].get("namespace") for o in objects if o["kind"] != "Namespace"} == {"rft"}


def test_validation_rejects_broken_leader_worker_sets(lws) -> None:
    """The validators are not no-ops: each catches a plausible mistake."""
    typo = copy.deepcopy(lws)
    typo["spec"]["leaderWorkerTemplate"]["restartPolicy"] = "RecreateGroupOnRestart"
    with pytest.raises(jsonschema.ValidationError):
        validate_lws(typo)
    unknown = copy.deepcopy(lws)
    unknown["spec"]["leaderWorkerTemplate"]["replicas"] = 2  # replicas belongs to spec
    with pytest.raises(jsonschema.ValidationError):
        validate_lws(unknown)
    pod = copy.deepcopy(lws)
    container(pod, "worker")["securityContext"]["readOnlyRootFileSystem"] = True  # wrong case
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_lws(pod)


def test_the_leader_worker_set_replaces_the_learner_deployment_and_its_references_resolve(objects, lws) -> None:
    workloads = [o for o in objects if o["kind"] in ("Deployment", "StatefulSet")]
    assert [o["metadata"]["name"] for o in workloads if "learner" in o["metadata"]["name"]] == []
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    # LWS makes a headless Service named after the set for its pods' DNS names; an existing
    # Service of that name would stop it and leave the rendezvous address unresolvable.
    assert ("Service", lws["metadata"]["name"]) not in names
    missing = []
    for role, template in templates(lws).items():
        spec = template["spec"]
        if ("ServiceAccount", spec["serviceAccountName"]) not in names:
            missing.append(f"{role}: ServiceAccount {spec['serviceAccountName']}")
        volumes = {v["name"]: v for v in spec["volumes"]}
        for volume in volumes.values():
            if "secret" in volume and ("Secret", volume["secret"]["secretName"]) not in names:
                missing.append(f"{role}: Secret {volume['secret']['secretName']}")
            if "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                if ("PersistentVolumeClaim", claim) not in names:
                    missing.append(f"{role}: PersistentVolumeClaim {claim}")
        for mount in container(lws, role)["volumeMounts"]:
            if mount["name"] not in volumes:
                missing.append(f"{role}: volumeMount {mount['name']} has no volume")
        image = container(lws, role)["image"]
        if not image.startswith("registry.example.com/rft/rft-learner:") or image.endswith(":latest"):
            missing.append(f"{role}: image {image} not pinned like the gpu overlay's")
    assert not missing, "\n".join(missing)


# ---- the launch ----


def test_every_pod_runs_torchrun_with_the_leader_as_rendezvous_and_node_0(lws) -> None:
    size = lws["spec"]["leaderWorkerTemplate"]["size"]
    leader_dns = lws_env(lws, 0)["LWS_LEADER_ADDRESS"]
    assert leader_dns == "rft-learner-ranks-0.rft-learner-ranks.rft"
    for role, index in [("leader", 0), ("worker", 1), ("worker", size - 1)]:
        args = torchrun_args(lws, role, index)
        assert args.nnodes == str(size)
        assert args.rdzv_endpoint == f"{leader_dns}:{RENDEZVOUS_PORT}"
        # Static rendezvous ranks nodes by --node-rank, so node 0 (global ranks 0..G-1, and
        # rank 0 the service) is the leader pod; c10d would rank nodes by host name.
        assert args.rdzv_backend == "static" and args.node_rank == index
        assert args.no_python and args.training_script == "rft-learner"
        assert args.training_script_args[0] == "serve"
        learner_env = {e["name"]: e.get("value", "") for e in container(lws, role)["env"]}
        assert not {name for name in learner_env if name.startswith("LWS_")}, "the controller's values must win"
    leader_ports = {p["containerPort"] for p in container(lws, "leader")["ports"]}
    assert RENDEZVOUS_PORT in leader_ports


def test_the_learner_arguments_parse_as_a_sharded_nccl_learner(lws, monkeypatch) -> None:
    from rft_common.config import parse_serve_command
    from rft_learner.config import LearnerConfig

    for role in ("leader", "worker"):
        args = torchrun_args(lws, role, 0 if role == "leader" else 1)
        for name in [n for n in os.environ if n.startswith("RFT_LEARNER_")]:
            monkeypatch.delenv(name)
        for item in container(lws, role)["env"]:
            if item["name"].startswith("RFT_LEARNER_"):
                monkeypatch.setenv(item["name"], item["value"])
        config = parse_serve_command("rft-learner", LearnerConfig, "RFT_LEARNER", args.training_script_args)
        assert config.trainer_sharding == "fsdp", role
        assert config.dist_backend == "nccl" and config.device == "auto", role


def test_world_size_is_nodes_times_gpus_and_every_pod_asks_for_its_gpus(lws) -> None:
    size = lws["spec"]["leaderWorkerTemplate"]["size"]
    leader, worker = torchrun_args(lws, "leader", 0), torchrun_args(lws, "worker", 1)
    assert container(lws, "leader")["args"] == container(lws, "worker")["args"], "one torchrun group, one command"
    for role, args in [("leader", leader), ("worker", worker)]:
        assert int(args.nproc_per_node) == gpus(container(lws, role)), f"{role}: one rank per GPU"
        spec = templates(lws)[role]["spec"]
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    world = size * int(leader.nproc_per_node)
    assert world == sum(gpus(container(lws, role)) for role in ["leader"] + ["worker"] * (size - 1)) == 16


def test_a_failed_rank_recreates_the_group_and_workers_start_with_the_leader(lws) -> None:
    spec = lws["spec"]
    assert spec["replicas"] == 1, "one learner: it owns the SQLite job database"
    assert spec["leaderWorkerTemplate"]["restartPolicy"] == "RecreateGroupOnPodRestart"
    # LeaderReady would deadlock: the leader is ready only once every worker has joined.
    assert spec.get("startupPolicy", "LeaderCreated") == "LeaderCreated"
    assert spec["rolloutStrategy"]["rollingUpdateConfiguration"] == {"maxUnavailable": 1, "maxSurge": 0}


def test_every_pod_has_shared_memory_in_ram_and_the_data_volume(lws) -> None:
    for role, template in templates(lws).items():
        volumes = {v["name"]: v for v in template["spec"]["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in container(lws, role)["volumeMounts"]}
        assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory", role
        assert volumes[mounts["/data"]]["persistentVolumeClaim"]["claimName"] == "rft-data", role


# ---- the leader serves; the workers follow ----


def test_the_service_and_its_scrape_select_the_leader_only(objects, lws) -> None:
    service = one(objects, "Service", "rft-learner")
    labels = {role: template["metadata"]["labels"] for role, template in templates(lws).items()}
    assert selects(service["spec"]["selector"], labels["leader"])
    assert not selects(service["spec"]["selector"], labels["worker"])
    monitor = one(objects, "ServiceMonitor", "rft-learner")
    assert selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    budget = one(objects, "PodDisruptionBudget", "rft-learner")
    assert all(selects(budget["spec"]["selector"]["matchLabels"], pod) for pod in labels.values())


def test_probes_on_the_leader_only_and_the_leader_is_the_gpu_learner(rendered, lws) -> None:
    """The leader keeps everything the gpu overlay gives the single learner pod (TLS,
    tokens, API keys, env, mounts, hardening, probes); only command, resources and the
    start-up budget differ."""
    gpu = one(rendered["gpu"], "Deployment", "rft-learner")
    (single,) = pod_spec(gpu)["containers"]
    leader, worker = container(lws, "leader"), container(lws, "worker")
    assert not {"startupProbe", "readinessProbe", "livenessProbe"} & set(worker), "workers serve nothing to probe"
    for probe in ("readinessProbe", "livenessProbe"):
        assert leader[probe] == single[probe], probe
    assert leader["startupProbe"]["exec"] == single["startupProbe"]["exec"]
    budget = leader["startupProbe"]["periodSeconds"] * leader["startupProbe"]["failureThreshold"]
    assert budget >= 15 * 60, "rank 0 serves only after every worker pod is scheduled and joined"
    single_env = {e["name"]: e["value"] for e in single["env"]}
    leader_env = {e["name"]: e["value"] for e in leader["env"]}
    # The grace period only is shorter: torchrun's shutdown timeout bounds rank 0's stop.
    grace = "RFT_LEARNER_GRACE_SECONDS"
    assert float(leader_env[grace]) < float(single_env.pop(grace))
    assert {k: leader_env.get(k) for k in single_env} == single_env
    assert leader["volumeMounts"] == single["volumeMounts"]
    assert leader["securityContext"] == single["securityContext"] == worker["securityContext"]
    assert {p["name"]: p["containerPort"] for p in single["ports"]}.items() <= {
        p["name"]: p["containerPort"] for p in leader["ports"]
    }.items()
    for role, template in templates(lws).items():
        spec = template["spec"]
        assert spec["securityContext"] == pod_spec(gpu)["securityContext"], role
        assert spec["automountServiceAccountToken"] is False, role
    worker_env = {e["name"] for e in worker["env"]}
    assert not {n for n in worker_env if "TOKEN" in n or "TLS" in n or "API_KEYS" in n}, "workers hold no secrets"


# ---- stopping ----

TORCHRUN_FIXED_SHUTDOWN_SECONDS = 30
"""torchrun's shutdown timeout in torch releases without --shutdown-timeout: on SIGTERM
SimpleElasticAgent.run calls LocalElasticAgent._shutdown(e.sigval), whose `timeout: int =
30` bounds PContext.close (torch/distributed/elastic/agent/server/local_elastic_agent.py;
the pattern `pc.shutdown(e.sigval, timeout=30)` in elastic/multiprocessing/api.py), which
then SIGKILLs the ranks still running."""


def torchrun_shutdown_seconds(lws: dict[str, Any], role: str, worker_index: int, monkeypatch) -> int:
    """How long torchrun, as the pod runs it, waits after forwarding SIGTERM to its ranks
    before it SIGKILLs them: torch's own launch config built from the pod's arguments and
    environment (--shutdown-timeout, else TORCH_ELASTIC_SHUTDOWN_TIMEOUT, else 30), or
    the fixed 30 s of a torch that has no such setting."""
    from torch.distributed.run import config_from_args

    monkeypatch.delenv("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", raising=False)  # the pod's environment only
    for item in container(lws, role)["env"]:
        monkeypatch.setenv(item["name"], item.get("value", ""))
    # config_from_args sets OMP_NUM_THREADS in this process when it is unset.
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    config, _, _ = config_from_args(torchrun_args(lws, role, worker_index))
    seconds = getattr(config, "shutdown_timeout", None)
    return TORCHRUN_FIXED_SHUTDOWN_SECONDS if seconds is None else int(seconds)


def http_drain_seconds() -> float:
    """How long the learner's HTTP API lets requests finish when it stops (after the gRPC
    drain): uvicorn's timeout_graceful_shutdown in rft_learner.http_api.server."""
    import inspect

    from rft_learner.http_api import server

    (seconds,) = re.findall(r"timeout_graceful_shutdown=(\d+(?:\.\d+)?)", inspect.getsource(server))
    return float(seconds)


def test_rank_0_stops_before_torchrun_kills_it_and_torchrun_before_the_kubelet(lws, monkeypatch) -> None:
    """SIGTERM reaches torchrun (the container's PID 1); its agent forwards it to the ranks
    and SIGKILLs them after its shutdown timeout. Rank 0 drains gRPC (its grace period),
    then HTTP, then stops the job with its checkpoint: all that, with time to spare, must
    fit in torchrun's timeout, and torchrun's timeout in the pod's grace period (else the
    kubelet SIGKILLs torchrun and every rank with it)."""
    margin = 5.0  # seconds left for the job's checkpoint and the store's close
    shutdown = {}
    for role, index in (("leader", 0), ("worker", 1)):
        shutdown[role] = torchrun_shutdown_seconds(lws, role, index, monkeypatch)
        period = templates(lws)[role]["spec"]["terminationGracePeriodSeconds"]
        assert shutdown[role] < period, f"{role}: the kubelet would kill torchrun before it kills its ranks"
    env = {e["name"]: e["value"] for e in container(lws, "leader")["env"]}
    grace = float(env["RFT_LEARNER_GRACE_SECONDS"])
    assert grace + http_drain_seconds() + margin <= shutdown["leader"], (
        f"RFT_LEARNER_GRACE_SECONDS {grace} + the HTTP drain {http_drain_seconds()} s leaves rank 0 less than "
        f"{margin} s before torchrun SIGKILLs it ({shutdown['leader']} s)"
    )


def test_the_shutdown_timeout_is_read_from_what_torchrun_runs_with(lws, monkeypatch) -> None:
    """The check above follows torch: an explicit torchrun flag or environment variable
    moves the timeout, and the default is torch's 30 s."""
    import torch
    from torch.distributed.run import get_args_parser

    assert torchrun_shutdown_seconds(lws, "leader", 0, monkeypatch) == TORCHRUN_FIXED_SHUTDOWN_SECONDS
    if "--shutdown-timeout" not in get_args_parser().format_help():
        pytest.skip(f"torch {torch.__version__} has no --shutdown-timeout: its timeout is the fixed 30 s")
    longer = copy.deepcopy(lws)
    container(longer, "leader")["env"].append({"name": "TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "value": "50"})
    assert torchrun_shutdown_seconds(longer, "leader", 0, monkeypatch) == 50
    container(longer, "leader")["args"].insert(0, "--shutdown-timeout=12")
    assert torchrun_shutdown_seconds(longer, "leader", 0, monkeypatch) == 12


# ---- the network ----


def admits(objects, source: dict[str, str], target: dict[str, str], port: int, source_namespace: str = "rft") -> bool:
    """Whether the NetworkPolicies let a pod with labels `source` open TCP `port` on a pod
    with labels `target` (in namespace rft); the subset of NetworkPolicy semantics the
    overlays use (matchLabels selectors, numeric TCP ports)."""
    namespace_labels = {"kubernetes.io/metadata.name": source_namespace}
    policies = [
        p
        for p in find(objects, "NetworkPolicy")
        if "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
        and selects(p["spec"]["podSelector"].get("matchLabels", {}), target)
    ]
    if not policies:
        return True
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            if "ports" in rule and not any(
                p.get("protocol", "TCP") == "TCP" and p["port"] == port for p in rule["ports"]
            ):
                continue
            if "from" not in rule:
                return True
            for peer in rule["from"]:
                pods = peer.get("podSelector", {}).get("matchLabels", {})
                if "namespaceSelector" in peer:
                    in_namespace = selects(peer["namespaceSelector"].get("matchLabels", {}), namespace_labels)
                else:
                    in_namespace = source_namespace == policy["metadata"]["namespace"]
                if in_namespace and selects(pods, source):
                    return True
    return False


def test_ranks_reach_each_other_on_the_rendezvous_and_any_nccl_port(objects, lws) -> None:
    labels = {role: template["metadata"]["labels"] for role, template in templates(lws).items()}
    rollout = {"app.kubernetes.io/name": "rft-rollout"}
    grader = {"app.kubernetes.io/name": "rft-grader"}
    for port in (RENDEZVOUS_PORT, 43117, 61002):  # the store, and ports NCCL / gloo pick at random
        assert admits(objects, labels["worker"], labels["leader"], port)
        assert admits(objects, labels["leader"], labels["worker"], port)
        assert admits(objects, labels["worker"], labels["worker"], port)
        assert not admits(objects, rollout, labels["leader"], port), "only ranks join the group"
        assert not admits(objects, grader, labels["worker"], port)
    for port in API_PORTS:  # clients reach the service as before the overlay
        assert admits(objects, {"app": "client"}, labels["leader"], port, source_namespace="users")
    assert admits(objects, {}, labels["leader"], METRICS_PORT, source_namespace="monitoring")
    assert not admits(objects, {}, labels["leader"], METRICS_PORT, source_namespace="users")
    # The grader still admits the learner (rank 0 calls it), and its policy holds.
    assert admits(objects, labels["leader"], grader, 50052)
    assert not admits(objects, rollout, grader, 50052)


# ---- the rendered command, run ----


def test_the_rendered_command_forms_the_group_and_serves_from_the_leader(lws, tmp_path) -> None:
    """Two local processes stand in for the leader and one worker pod: the rendered
    command with the LWS variables set (leader address 127.0.0.1), one CPU rank per pod
    over gloo instead of 8 GPUs over NCCL. The leader's torchrun node becomes rank 0 and
    serves gRPC; stopping it releases the worker's rank."""
    from service_process import ServiceProcess, free_port

    store_port = free_port()

    def pod_argv(role: str, index: int) -> list[str]:
        variables = {**lws_env(lws, index), "LWS_LEADER_ADDRESS": "127.0.0.1", "LWS_GROUP_SIZE": "2"}
        argv = expand(container(lws, role)["args"], variables)
        argv = [re.sub(r"^--nproc-per-node=\d+$", "--nproc-per-node=1", a) for a in argv]
        return [a.replace(f":{RENDEZVOUS_PORT}", f":{store_port}") for a in argv]

    env = {
        "RFT_LEARNER_DEVICE": "cpu",
        "RFT_LEARNER_DIST_BACKEND": "gloo",
        "RFT_LEARNER_TORCH_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
    }
    worker_argv = pod_argv("worker", 1)
    worker_log = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen(
        [str(BIN / "torchrun"), *worker_argv, "--data-dir", str(tmp_path / "worker")],
        env={**os.environ, **env},
        stdout=worker_log,
        stderr=subprocess.STDOUT,
    )
    try:
        leader_argv = pod_argv("leader", 0)
        script = leader_argv.index("rft-learner")
        assert leader_argv[script + 1] == "serve"
        launcher = [str(BIN / "torchrun"), *leader_argv[:script]]
        extra = [*leader_argv[script + 2 :], "--data-dir", str(tmp_path / "leader")]
        leader = ServiceProcess("rft-learner", extra, env=env, launcher=launcher, ready_timeout=180)
        with leader:
            assert worker.poll() is None, "the worker pod's rank should be waiting for jobs"
        leader.proc.wait(timeout=60)
        worker.wait(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        worker_log.close()
    logs = (tmp_path / "worker.log").read_text()
    assert "trainer rank 1 released by rank 0" in logs, logs[-3000:]
    assert "learner stopped" in leader.logs(), leader.logs()[-3000:]
