#!/usr/bin/env python3
"""Write grafana-dashboard.json, the RFT Grafana dashboard, from the panel list below.

The JSON is generated so that each panel reads as one line of intent here; tests/deploy
fails while the committed JSON differs from this script's output, and runs every query
against a real Prometheus to check it parses.
"""

from __future__ import annotations

import json
import pathlib

HERE = pathlib.Path(__file__).resolve().parent
JOB = 'job_id=~"$job_id"'
RATE = "$__rate_interval"


def q(expr: str, legend: str) -> dict:
    return {"expr": expr, "legendFormat": legend}


def quantiles(metric: str, by: str, selector: str = "", qs: tuple[float, ...] = (0.5, 0.95)) -> list[dict]:
    by_clause = f"le, {by}" if by else "le"
    return [
        q(
            f"histogram_quantile({p}, sum by ({by_clause}) (rate({metric}_bucket{selector}[{RATE}])))",
            f"p{int(p * 100)} {{{{{by}}}}}" if by else f"p{int(p * 100)}",
        )
        for p in qs
    ]


# (row title, [(panel title, unit, description, [queries], options)])
ROWS: list[tuple[str, list[tuple[str, str, str, list[dict], dict]]]] = [
    (
        "Training",
        [
            (
                "Reward (train / valid)",
                "none",
                "Mean grader reward of training samples (every step) and of validation samples "
                "(every eval_interval steps). The curve that says whether fine-tuning works.",
                [
                    q(f"rft_learner_train_reward_mean{{{JOB}}}", "train {{job_id}}"),
                    q(f"rft_learner_valid_reward_mean{{{JOB}}}", "valid {{job_id}}"),
                ],
                {"min": 0, "max": 1},
            ),
            (
                "Steps per minute",
                "none",
                "Optimizer steps finished per minute. Flat at zero while a job runs = trainer stuck.",
                [q(f"rate(rft_learner_steps_total{{{JOB}}}[{RATE}]) * 60", "{{job_id}}")],
                {},
            ),
            (
                "Tokens per second",
                "none",
                "Learner: tokens trained per second. Rollout: tokens generated per second, per replica.",
                [
                    q(f"rft_learner_tokens_per_second{{{JOB}}}", "learner {{job_id}}"),
                    q(f"sum by (instance) (rate(rft_rollout_generated_tokens_total[{RATE}]))", "rollout {{instance}}"),
                ],
                {},
            ),
            (
                "Step time breakdown",
                "s",
                "Mean seconds per step spent in each phase: generate (rollout), grade (grader), train "
                "(policy update), sync (weight push), eval. Stacked: the top is the whole step.",
                [
                    q(
                        f"sum by (phase) (rate(rft_learner_step_phase_seconds_sum{{{JOB}}}[{RATE}]))"
                        f" / sum by (phase) (rate(rft_learner_step_phase_seconds_count{{{JOB}}}[{RATE}]))",
                        "{{phase}}",
                    )
                ],
                {"stack": True},
            ),
            (
                "KL, entropy, clip fraction",
                "none",
                "KL to the reference model (rising fast = policy drifting), policy entropy (collapsing "
                "= exploration gone), fraction of clipped ratios (high = steps too large or too stale).",
                [
                    q(f"rft_learner_kl{{{JOB}}}", "kl {{job_id}}"),
                    q(f"rft_learner_entropy{{{JOB}}}", "entropy {{job_id}}"),
                    q(f"rft_learner_clip_fraction{{{JOB}}}", "clip fraction {{job_id}}"),
                ],
                {},
            ),
            (
                "Policy-version lag",
                "none",
                "How many policy versions behind the learner the samples of a step were generated "
                "(bounded by the job's staleness), and the version each rollout replica serves.",
                [
                    q(f"rft_learner_policy_version_lag{{{JOB}}}", "lag {{job_id}}"),
                    q("rft_rollout_policy_version", "replica {{instance}}"),
                ],
                {},
            ),
        ],
    ),
    (
        "Weight sync",
        [
            (
                "Weight sync time",
                "s",
                "Learner: time to push one policy version to every replica. Rollout: time to apply one "
                "update, by transport (grpc stream or shared file).",
                quantiles("rft_learner_weight_sync_seconds", "")
                + quantiles("rft_rollout_weight_update_seconds", "transport", qs=(0.95,)),
                {},
            ),
            (
                "Weight update traffic and failures",
                "Bps",
                "Bytes of weights received per second by the rollout replicas, and failed updates.",
                [
                    q(f"sum(rate(rft_rollout_weight_update_bytes_total[{RATE}]))", "bytes/s"),
                    q(
                        f"sum by (reason) (increase(rft_rollout_weight_update_failures_total[{RATE}]))",
                        "failures {{reason}}",
                    ),
                ],
                {},
            ),
        ],
    ),
    (
        "Grader",
        [
            (
                "Grade latency",
                "s",
                "Seconds to grade one sample, by grader type (p50, p95, p99).",
                quantiles("rft_grader_grade_seconds", "type", qs=(0.5, 0.95, 0.99)),
                {},
            ),
            (
                "Grader errors",
                "percentunit",
                "Share of grades that ended in an error, by tenant, and error rate by kind. An error is "
                "not a zero reward: the learner drops the sample.",
                [
                    q(
                        f'sum by (tenant) (rate(rft_grader_grades_total{{outcome!="ok"}}[{RATE}]))'
                        f" / sum by (tenant) (rate(rft_grader_grades_total[{RATE}]))",
                        "error share {{tenant}}",
                    ),
                ],
                {"max": 1},
            ),
            (
                "Grader errors by kind",
                "ops",
                "Errors per second by outcome (exception, timeout, invalid_score, ...), sandbox kills by "
                "reason, and grader errors the learner counted per job.",
                [
                    q(
                        f'sum by (outcome) (rate(rft_grader_grades_total{{outcome!="ok"}}[{RATE}]))',
                        "{{outcome}}",
                    ),
                    q(f"sum by (reason) (rate(rft_grader_sandbox_kills_total[{RATE}]))", "kill {{reason}}"),
                    q(f"rate(rft_learner_grader_errors_total{{{JOB}}}[{RATE}])", "learner {{job_id}}"),
                ],
                {},
            ),
            (
                "Grader load",
                "none",
                "Grades per second by type, mean samples per Grade call, sandbox workers per tenant.",
                [
                    q(f"sum by (type) (rate(rft_grader_grades_total[{RATE}]))", "grades/s {{type}}"),
                    q(
                        f"sum(rate(rft_grader_batch_size_sum[{RATE}])) / sum(rate(rft_grader_batch_size_count[{RATE}]))",
                        "mean batch size",
                    ),
                    q("sum by (tenant) (rft_grader_sandbox_workers)", "workers {{tenant}}"),
                ],
                {},
            ),
        ],
    ),
    (
        "Rollout and services",
        [
            (
                "Replicas SERVING",
                "none",
                "Pods reporting SERVING on grpc.health.v1, per service.",
                [q("sum by (service) (rft_service_serving)", "{{service}}")],
                {},
            ),
            (
                "Rollout latency and queue",
                "s",
                "Time to first token and whole-generation time (p95), and requests waiting (right axis).",
                quantiles("rft_rollout_time_to_first_token_seconds", "", qs=(0.95,))
                + quantiles("rft_rollout_generation_seconds", "", qs=(0.95,))
                + [q("sum(rft_rollout_queue_depth)", "queue depth")],
                {"right_axis": "queue depth"},
            ),
            (
                "RPC errors",
                "ops",
                "RPCs per second that ended with a status other than OK, by service, method and code.",
                [
                    q(
                        f'sum by (service, method, code) (rate(rft_rpc_requests_total{{code!="OK"}}[{RATE}]))',
                        "{{service}}/{{method}} {{code}}",
                    )
                ],
                {},
            ),
            (
                "RPC latency p95",
                "s",
                "95th percentile RPC handling time by service and method; in-flight RPCs on the right.",
                quantiles("rft_rpc_duration_seconds", "service, method", qs=(0.95,))
                + [q("sum by (service) (rft_rpc_in_flight)", "in flight {{service}}")],
                {},
            ),
            (
                "Jobs by status",
                "none",
                "Fine-tuning jobs the learner holds, by status.",
                [q("sum by (status) (rft_learner_jobs)", "{{status}}")],
                {},
            ),
        ],
    ),
]


def panel(panel_id: int, title: str, unit: str, description: str, queries: list[dict], opts: dict, x: int, y: int):
    defaults: dict = {"unit": unit, "custom": {"fillOpacity": 10, "lineWidth": 1, "showPoints": "never"}}
    for key in ("min", "max"):
        if key in opts:
            defaults[key] = opts[key]
    if opts.get("stack"):
        defaults["custom"]["stacking"] = {"mode": "normal"}
        defaults["custom"]["fillOpacity"] = 60
    overrides = []
    if "right_axis" in opts:
        overrides.append(
            {
                "matcher": {"id": "byName", "options": opts["right_axis"]},
                "properties": [
                    {"id": "custom.axisPlacement", "value": "right"},
                    {"id": "unit", "value": "none"},
                ],
            }
        )
    return {
        "id": panel_id,
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 8, "x": x, "y": y},
        "fieldConfig": {"defaults": defaults, "overrides": overrides},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": {"type": "prometheus", "uid": "${datasource}"}, **query}
            for i, query in enumerate(queries)
        ],
    }


def dashboard() -> dict:
    panels: list[dict] = []
    y = 0
    next_id = 1
    for row_title, row_panels in ROWS:
        panels.append(
            {
                "id": next_id,
                "type": "row",
                "title": row_title,
                "collapsed": False,
                "panels": [],
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
            }
        )
        next_id += 1
        y += 1
        for index, (title, unit, description, queries, opts) in enumerate(row_panels):
            x = (index % 3) * 8
            if index and index % 3 == 0:
                y += 8
            panels.append(panel(next_id, title, unit, description, queries, opts, x, y))
            next_id += 1
        y += 8
    return {
        "uid": "rft-overview",
        "title": "RFT: training, rollout, grader",
        "description": "Reinforcement fine-tuning services: reward curves, throughput, step time, grader, weight sync.",
        "tags": ["rft"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "timezone": "",
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                },
                {
                    "name": "job_id",
                    "label": "Fine-tuning job",
                    "type": "query",
                    "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    "query": {"query": "label_values(rft_learner_steps_total, job_id)", "refId": "jobs"},
                    "definition": "label_values(rft_learner_steps_total, job_id)",
                    "refresh": 2,
                    "includeAll": True,
                    "multi": True,
                    "allValue": ".*",
                    "current": {},
                    "hide": 0,
                    "sort": 1,
                },
            ]
        },
        "annotations": {"list": []},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


if __name__ == "__main__":
    (HERE / "grafana-dashboard.json").write_text(render())
    print("wrote", HERE / "grafana-dashboard.json")
