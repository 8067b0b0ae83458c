"""Every overlay renders with real kustomize and validates offline.

Built-in kinds are validated strictly (unknown fields rejected) against the Kubernetes
OpenAPI schemas that kubernetes-validate ships. kubernetes-validate has no schemas for
CRDs, so the two Prometheus Operator kinds we use (ServiceMonitor, PrometheusRule) are
checked against the subset of their CRD schemas written below (the fields we use, with
unknown fields rejected). Then the references between objects must resolve inside the
rendered output: a Secret, ConfigMap, PVC or ServiceAccount named by a pod exists in its
namespace, and every selector selects something.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
from rft_deploy_testlib import OVERLAYS, find, one, pod_labels, pod_spec, selects, workloads

K8S_VERSION = "1.37.0"
CRD_GROUPS = {"monitoring.coreos.com/v1"}

_LABEL_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
        "matchExpressions": {"type": "array"},
    },
}
_METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
_DURATION = {
    "type": "string",
    "pattern": "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
}
# Subsets of the Prometheus Operator CRD schemas (monitoring.coreos.com/v1).
CRD_SCHEMAS: dict[str, dict[str, Any]] = {
    "ServiceMonitor": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": "ServiceMonitor"},
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "required": ["selector", "endpoints"],
                "additionalProperties": False,
                "properties": {
                    "selector": _LABEL_SELECTOR,
                    "namespaceSelector": {"type": "object"},
                    "jobLabel": {"type": "string"},
                    "endpoints": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["port"],
                            "additionalProperties": False,
                            "properties": {
                                "port": {"type": "string"},
                                "path": {"type": "string"},
                                "scheme": {"enum": ["http", "https"]},
                                "interval": _DURATION,
                                "scrapeTimeout": _DURATION,
                                "honorLabels": {"type": "boolean"},
                            },
                        },
                    },
                },
            },
        },
    },
    "PrometheusRule": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": "PrometheusRule"},
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "required": ["groups"],
                "additionalProperties": False,
                "properties": {
                    "groups": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["name", "rules"],
                            "additionalProperties": False,
                            "properties": {
                                "name": {"type": "string", "minLength": 1},
                                "interval": _DURATION,
                                "rules": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "required": ["expr"],
                                        "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
                                        "additionalProperties": False,
                                        "properties": {
                                            "alert": {"type": "string"},
                                            "record": {"type": "string"},
                                            "expr": {"type": "string", "minLength": 1},
                                            "for": _DURATION,
                                            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                                            "annotations": {
                                                "type": "object",
                                                "additionalProperties": {"type": "string"},
                                            },
                                        },
                                    },
                                },
                            },
                        },
                    }
                },
            },
        },
    },
}
NAMESPACED_EXEMPT = {"Namespace"}


def validate(obj: dict[str, Any]) -> None:
    """Raise if `obj` does not match its schema (built-in or the CRD subset)."""
    if obj["apiVersion"] in CRD_GROUPS:
        jsonschema.validate(obj, CRD_SCHEMAS[obj["kind"]])
    else:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


@pytest.mark.parametrize("overlay", [*OVERLAYS, "base"])
def test_overlay_validates_against_schemas(rendered, overlay):
    objects = rendered[overlay]
    kinds = {o["kind"] for o in objects}
    expected = {
        "Namespace",
        "Deployment",
        "Service",
        "PersistentVolumeClaim",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
        "ServiceMonitor",
        "PrometheusRule",
        "ServiceAccount",
        "ConfigMap",
    }
    assert expected <= kinds, f"missing kinds: {expected - kinds}"
    problems = []
    for obj in objects:
        try:
            validate(obj)
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as exc:
            problems.append(f"{obj['kind']}/{obj['metadata']['name']}: {str(exc).splitlines()[0]}")
    assert not problems, "\n".join(problems)


def test_validation_rejects_broken_objects(rendered):
    """The validators are not no-ops: each catches a plausible mistake."""
    deployment = copy.deepcopy(one(rendered["cpu-dev"], "Deployment", "rft-grader"))
    pod_spec(deployment)["containers"][0]["readinessProbe"]["grpc"]["port"] = "grpc"  # named ports are not allowed
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)
    typo = copy.deepcopy(one(rendered["gpu"], "Deployment", "rft-rollout"))
    pod_spec(typo)["containers"][0]["securityContext"]["readOnlyRootFileSystem"] = True  # wrong case
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(typo)
    monitor = copy.deepcopy(find(rendered["gpu"], "ServiceMonitor")[0])
    monitor["spec"]["endpoints"][0]["targetPort"] = 9101  # a field we do not allow
    with pytest.raises(jsonschema.ValidationError):
        validate(monitor)
    rule = copy.deepcopy(one(rendered["gpu"], "PrometheusRule", "rft-alerts"))
    rule["spec"]["groups"][0]["rules"][0]["for"] = "5 minutes"
    with pytest.raises(jsonschema.ValidationError):
        validate(rule)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_everything_lands_in_the_overlay_namespace(rendered, overlay):
    objects = rendered[overlay]
    (namespace,) = find(objects, "Namespace")
    name = namespace["metadata"]["name"]
    wrong = [
        f"{o['kind']}/{o['metadata']['name']} in {o['metadata'].get('namespace')!r}"
        for o in objects
        if o["kind"] not in NAMESPACED_EXEMPT and o["metadata"].get("namespace") != name
    ]
    assert not wrong, f"not in namespace {name}: {wrong}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_references_resolve(rendered, overlay):
    """Names a pod or a controller uses exist in the rendered output."""
    objects = rendered[overlay]
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    missing = []
    for workload in workloads(objects):
        spec = pod_spec(workload)
        where = f"{workload['kind']}/{workload['metadata']['name']}"
        if ("ServiceAccount", spec.get("serviceAccountName", "default")) not in names:
            missing.append(f"{where}: ServiceAccount {spec.get('serviceAccountName')}")
        for volume in spec.get("volumes", []):
            for kind, key, field in [
                ("Secret", "secret", "secretName"),
                ("ConfigMap", "configMap", "name"),
                ("PersistentVolumeClaim", "persistentVolumeClaim", "claimName"),
            ]:
                if key in volume and (kind, volume[key][field]) not in names:
                    missing.append(f"{where}: {kind} {volume[key][field]}")
        mounted = {v["name"] for v in spec.get("volumes", [])}
        for container in spec["containers"]:
            for mount in container.get("volumeMounts", []):
                if mount["name"] not in mounted:
                    missing.append(f"{where}: volumeMount {mount['name']} has no volume")
        assert selects(workload["spec"]["selector"]["matchLabels"], pod_labels(workload)), where
    pods = [pod_labels(w) for w in workloads(objects)]
    for service in find(objects, "Service"):
        if not any(selects(service["spec"]["selector"], labels) for labels in pods):
            missing.append(f"Service/{service['metadata']['name']} selects no pod")
    for budget in find(objects, "PodDisruptionBudget"):
        if not any(selects(budget["spec"]["selector"]["matchLabels"], labels) for labels in pods):
            missing.append(f"PodDisruptionBudget/{budget['metadata']['name']} selects no pod")
    for policy in find(objects, "NetworkPolicy"):
        if not any(selects(policy["spec"]["podSelector"]["matchLabels"], labels) for labels in pods):
            missing.append(f"NetworkPolicy/{policy['metadata']['name']} selects no pod")
    for hpa in find(objects, "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        if (target["kind"], target["name"]) not in names:
            missing.append(f"HorizontalPodAutoscaler/{hpa['metadata']['name']}: {target}")
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_has_one_service_monitor_scraping_its_metrics_port(rendered, overlay):
    objects = rendered[overlay]
    services = find(objects, "Service")
    for name in ["rft-rollout", "rft-grader", "rft-learner"]:
        monitor = one(objects, "ServiceMonitor", name)
        selected = [s for s in services if selects(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])]
        assert [s["metadata"]["name"] for s in selected] == [name], "a pod scraped twice or not at all"
        port_names = {p["name"] for p in selected[0]["spec"]["ports"]}
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= port_names
    # Per-job learner metrics are labelled job_id, so no label may override the scrape's `job`.
    assert all(
        not e.get("honorLabels") for m in objects if m["kind"] == "ServiceMonitor" for e in m["spec"]["endpoints"]
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_images_are_pinned_to_a_registry_and_tag(rendered, overlay):
    for workload in workloads(rendered[overlay]):
        for container in pod_spec(workload)["containers"]:
            image = container["image"]
            assert "/" in image and ":" in image.rsplit("/", 1)[1], image
            assert not image.endswith(":latest"), image
