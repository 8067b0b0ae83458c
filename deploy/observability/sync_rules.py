#!/usr/bin/env python3
"""Write prometheus-rule.yaml (a Prometheus Operator PrometheusRule) from alerts.yml.

alerts.yml is the source: promtool checks and unit-tests it. Run this after editing
it; tests/deploy fails while the two differ.
"""

from __future__ import annotations

import pathlib

import yaml

HERE = pathlib.Path(__file__).resolve().parent
HEADER = "# Generated from alerts.yml by sync_rules.py: edit alerts.yml, then run the script.\n"


def prometheus_rule() -> dict:
    groups = yaml.safe_load((HERE / "alerts.yml").read_text())["groups"]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "rft-alerts", "labels": {"app.kubernetes.io/name": "rft-alerts"}},
        "spec": {"groups": groups},
    }


class _Dumper(yaml.SafeDumper):
    """Writes multi-line strings (PromQL, descriptions) as literal blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render() -> str:
    return HEADER + yaml.dump(prometheus_rule(), Dumper=_Dumper, sort_keys=False, width=100)


if __name__ == "__main__":
    (HERE / "prometheus-rule.yaml").write_text(render())
    print("wrote", HERE / "prometheus-rule.yaml")
