"""The web console in headless Chromium against live services on loopback: what a person
does on each page, in order, as one tenant; then a second tenant sees none of it."""

from __future__ import annotations

import decimal
import json
import pathlib
import re
import time
import urllib.request

import pytest
from console_browser import REPO
from playwright.sync_api import expect
from tenant_keys import KEYS

pytestmark = pytest.mark.timeout(1800)
TRAIN_ROWS = 256
VALID_ROWS = 32
STATE: dict[str, str] = {}


def api(services, method: str, path: str, body: dict | None = None, key: str = KEYS["alice"]) -> tuple[int, dict]:
    request = urllib.request.Request(
        services.base_url + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def until(page, expression: str, timeout: float = 30.0) -> None:
    """Poll a JavaScript expression until true (wait_for_function would need the eval our
    Content-Security-Policy forbids)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {timeout} s: {expression}")
        time.sleep(0.2)


def shown(value) -> str:
    """A number as the console shows it (ui.js num): whole numbers bare, else JavaScript's
    toFixed(3), which rounds an exact tie away from zero (0.0625 -> 0.063)."""
    if value is None:
        return "–"
    if float(value).is_integer():
        return str(int(value))
    return str(decimal.Decimal(value).quantize(decimal.Decimal("0.001"), rounding=decimal.ROUND_HALF_UP))


def console_url(services) -> str:
    return services.base_url.removesuffix("/v1") + "/console/"


@pytest.fixture(scope="module")
def page(browser, services):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(30_000)
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("console", lambda msg: problems.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None)
    yield page
    context.close()
    # 4xx answers the tests provoke show up as failed resource loads; script errors must not.
    assert not [p for p in problems if "Failed to load resource" not in p], problems


def demo_files(tmp_path: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    train, valid = tmp_path / "demo-train.jsonl", tmp_path / "demo-valid.jsonl"
    train.write_text("".join((REPO / "examples/demo/train.jsonl").read_text().splitlines(True)[:TRAIN_ROWS]))
    valid.write_text("".join((REPO / "examples/demo/valid.jsonl").read_text().splitlines(True)[:VALID_ROWS]))
    return train, valid


def test_login_refuses_a_wrong_key_then_logs_in_by_keyboard(page, services) -> None:
    response = page.goto(console_url(services))
    assert "default-src 'self'" in response.headers["content-security-policy"]
    page.get_by_label("API key").fill("sk-wrong")
    page.keyboard.press("Enter")
    assert "not valid" in page.get_by_role("alert").inner_text()
    page.get_by_label("API key").fill(KEYS["alice"])
    page.keyboard.press("Enter")
    page.get_by_role("navigation", name="Main").wait_for()
    # The key lives in this tab's sessionStorage only (docs/console.md), never localStorage.
    assert page.evaluate("Object.values(sessionStorage)") == [KEYS["alice"]]
    assert page.evaluate("localStorage.length") == 0
    # Keyboard: "Skip to content" is the first stop and moves into the page; the menu
    # works from the keyboard, and each new page's heading takes the focus.
    focused = "document.activeElement.textContent"
    page.keyboard.press("Tab")
    assert page.evaluate(focused) == "Skip to content"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    for _ in range(10):
        page.keyboard.press("Shift+Tab")
        if page.evaluate(focused) == "Files":
            break
    assert page.evaluate(focused) == "Files"
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="Files", level=1).wait_for()
    until(page, f"{focused} === 'Files'")


def test_files_upload_good_and_bad(page, services, screenshots, tmp_path) -> None:
    train, valid = demo_files(tmp_path)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"messages": [{"role": "user", "content": "hi"}]}\nnot json\n{"messages": [{"role": "bot", "content": "x"}]}\n'
    )
    page.goto(console_url(services) + "#/files")
    upload = page.locator('input[type="file"]')
    upload.set_input_files([str(train), str(valid)])
    page.get_by_text("stored as", exact=False).nth(1).wait_for()
    upload.set_input_files(str(bad))
    report = page.locator(".upload-rejected")
    report.wait_for()
    assert "2 bad lines; nothing was stored." in report.inner_text()
    rows = report.locator(".bad-lines tbody tr")
    assert rows.count() == 2
    assert rows.nth(0).locator("td").nth(0).inner_text() == "2"
    assert rows.nth(1).locator("td").all_inner_texts()[:2] == ["3", "messages[0].role"]
    listing = page.locator("table.list tbody tr")
    listing.nth(1).wait_for()
    assert listing.count() == 2 and "bad.jsonl" not in page.locator("table.list").inner_text()
    page.get_by_role("row", name=re.compile("demo-train.jsonl")).get_by_role("button", name="Preview").click()
    page.locator(".preview li").first.wait_for()
    assert page.locator(".preview li").count() == 5 and "What is" in page.locator(".preview").inner_text()
    page.screenshot(path=screenshots / "files.png", full_page=True)
    status, listed = api(services, "GET", "/files")
    STATE.update({f["filename"]: f["id"] for f in listed["data"]})
    assert set(STATE) == {"demo-train.jsonl", "demo-valid.jsonl"}


def test_grader_build_try_and_save(page, services, screenshots) -> None:
    page.goto(console_url(services) + "#/graders")
    page.get_by_label("type", exact=True).select_option("string_check")
    page.get_by_label("name", exact=True).fill("exact_answer")
    page.get_by_label("…or a pasted item").fill('{"answer": "137"}')
    page.get_by_label("Model answers").fill("137\n136")
    page.get_by_role("button", name="Run grader").click()
    rows = page.locator("table.results tbody tr")
    rows.nth(1).wait_for()
    assert rows.nth(0).locator("td.score").inner_text() == "1"
    assert rows.nth(1).locator("td.score").inner_text() == "0"
    # A typo is caught by the server's validation, with the field named.
    spec = page.get_by_label("Spec (JSON)")
    good = spec.input_value()
    spec.fill(good.replace('"reference"', '"refrence"'))
    page.get_by_role("button", name="Validate").click()
    assert "refrence" in page.get_by_role("alert").inner_text()
    spec.fill("{not json")
    assert "Not valid JSON" in page.locator("#grader-json-error").inner_text()
    spec.fill(good)
    page.get_by_role("button", name="Validate").click()
    page.get_by_text("The spec is valid.").wait_for()
    page.get_by_role("button", name="Save for my tenant").click()
    page.locator(".saved li", has_text="exact_answer").wait_for()
    page.screenshot(path=screenshots / "graders.png", full_page=True)


def test_new_job_checks_fields_inline_and_starts(page, services, screenshots) -> None:
    page.goto(console_url(services) + "#/jobs/new")
    page.get_by_label("Training file").select_option(STATE["demo-train.jsonl"])
    page.get_by_label("Validation file").select_option(STATE["demo-valid.jsonl"])
    page.get_by_label("Saved grader").select_option(label="exact_answer")
    page.get_by_text("More (").click()
    page.get_by_label("group_size", exact=True).fill("0")
    inline = page.locator("#hp-group_size-error")
    inline.filter(has_text="group_size").wait_for()
    # The same words the API answers for the same value.
    status, refused = api(
        services,
        "POST",
        "/fine_tuning/jobs",
        {
            "model": "demo-base",
            "training_file": STATE["demo-train.jsonl"],
            "method": {
                "type": "reinforcement",
                "reinforcement": {
                    "grader": {"type": "string_check", "name": "x", "input": "a", "reference": "a", "operation": "eq"},
                    "hyperparameters": {"group_size": 0},
                },
            },
        },
    )
    assert status == 400
    assert inline.inner_text() == refused["error"]["message"]
    page.screenshot(path=screenshots / "new-job.png", full_page=True)
    for name, value in {
        "n_epochs": "2", "batch_size": "16", "learning_rate_multiplier": "0.3", "eval_interval": "4",
        "eval_samples": "2", "group_size": "8", "max_new_tokens": "6", "kl_coef": "0",
    }.items():  # fmt: skip
        page.get_by_label(name, exact=True).fill(value)
    page.get_by_label("Suffix").fill("console")
    page.locator(".hp-grid [role=alert]").first.wait_for(state="detached")
    page.get_by_role("button", name="Create job").click()
    page.wait_for_url(re.compile(r"#/jobs/ftjob-"))
    STATE["job"] = page.url.rsplit("/", 1)[1]


def steps_shown(page) -> int:
    return int(page.locator(".summary .steps").inner_text().split("/")[0])


def test_job_page_curve_grows_pause_and_resume(page, services, screenshots) -> None:
    chart = page.locator("figure.chart").first
    points = "Number(document.querySelector('figure.chart')?.dataset.points || 0)"
    ended = "['failed', 'cancelled'].includes(document.querySelector('.summary .status')?.textContent)"
    until(page, f"{points} >= 2 || {ended}", timeout=600)
    assert not page.evaluate(ended), page.locator(".summary").inner_text()
    first = int(chart.get_attribute("data-points"))
    page.get_by_role("button", name="Pause").click()
    page.locator(".summary .status", has_text="paused").wait_for(timeout=120_000)
    paused_at = steps_shown(page)
    page.wait_for_timeout(3000)
    assert steps_shown(page) == paused_at  # nothing trains while paused
    page.get_by_role("button", name="Resume").click()
    until(page, f"{points} > {max(first, paused_at)}", timeout=600)
    page.get_by_label("Step time breakdown (s)").check()
    page.get_by_role("figure").filter(has_text="Step time breakdown").wait_for()
    page.locator(".summary .status", has_text="succeeded").wait_for(timeout=900_000)
    until(page, f"{points} >= 8")
    page.locator("#ckpt-heading ~ div table").first.wait_for()
    page.screenshot(path=screenshots / "job.png", full_page=True)
    # The chart's text label carries each series' last value.
    _, metrics = api(services, "GET", f"/fine_tuning/jobs/{STATE['job']}/metrics")
    last = [r["values"]["train_reward_mean"] for r in metrics["data"] if "train_reward_mean" in r["values"]][-1]
    label = page.locator("figure.chart div[role=img]").first.get_attribute("aria-label")
    assert f"train_reward_mean {last:.3f}" in label, label


def test_evaluate_base_against_fine_tuned(page, services, screenshots) -> None:
    page.get_by_role("link", name="Evaluate base vs fine-tuned").click()
    page.get_by_role("heading", name="Evaluate", level=1).wait_for()
    expect(page.get_by_label("Model A")).to_have_value("demo-base")  # once the model list has loaded
    expect(page.get_by_label("Model B")).to_have_value(re.compile(r"^ft:demo-base:alice:console:ftjob-"))
    expect(page.get_by_label("Validation file")).to_have_value(STATE["demo-valid.jsonl"])
    page.get_by_label("Samples per example").fill("2")
    page.get_by_role("button", name="Run evaluation").click()
    page.wait_for_url(re.compile(r"eval=eval"))
    page.get_by_role("heading", name="Per example").wait_for(timeout=900_000)
    runs = page.locator("ul.runs li")
    assert runs.nth(0).locator(".status").inner_text() == "completed", runs.nth(0).inner_text()
    assert runs.nth(1).locator(".status").inner_text() == "completed", runs.nth(1).inner_text()
    eval_id = re.search(r"eval=([\w-]+)", page.url).group(1)
    run_ids = re.search(r"runs=([\w,-]+)", page.url).group(1).split(",")
    runs = [api(services, "GET", f"/evals/{eval_id}/runs/{run_id}")[1] for run_id in run_ids]
    assert [run["model"] for run in runs][0] == "demo-base"
    for name in ("reward_mean", "pass@1", "pass@2", "greedy_pass@1", "greedy_reward_mean"):
        cells = page.locator(f'tr[data-metric="{name}"] td').all_inner_texts()
        values = [run["metrics"][name] for run in runs]
        assert cells[:2] == [shown(v) for v in values], (name, cells, values)
        diff = values[1] - values[0]
        assert cells[2] == ("–" if values[0] is None or values[1] is None else ("+" if diff > 0 else "") + shown(diff))
    examples = page.locator("tr[data-example]")
    examples.nth(VALID_ROWS - 1).wait_for()
    assert examples.count() == VALID_ROWS
    examples.first.get_by_role("button", name="samples of example 1").click()
    page.screenshot(path=screenshots / "evaluate.png", full_page=True)
    STATE["evaluation"] = page.url.split("#", 1)[1]
    # Reopened from the list, A and B keep their places.
    page.get_by_role("link", name="New evaluation").click()
    page.get_by_role("heading", name="Earlier evaluations").wait_for()
    page.locator("section[aria-labelledby=previous-heading] button").first.click()
    page.locator("ul.runs li").nth(1).wait_for()
    assert "demo-base" in page.locator("ul.runs li").nth(0).inner_text()
    assert "ft:demo-base:" in page.locator("ul.runs li").nth(1).inner_text()


def test_every_page_fits_a_narrow_window(browser, services, screenshots) -> None:
    context = browser.new_context(viewport={"width": 400, "height": 800})
    small = context.new_page()
    small.goto(console_url(services))
    small.get_by_label("API key").fill(KEYS["alice"])
    small.keyboard.press("Enter")
    small.get_by_role("navigation", name="Main").wait_for()
    for route in ("#/files", "#/graders", "#/jobs/new", "#/jobs", f"#/jobs/{STATE['job']}", STATE["evaluation"]):
        small.goto(console_url(services) + "#" + route.removeprefix("#"))
        small.locator("main h1").wait_for()
        small.wait_for_timeout(1500)  # lists and charts arrive
        if route.startswith("#/jobs/ftjob"):
            small.screenshot(path=screenshots / "job-narrow.png")
        too_wide = small.evaluate(
            "[...document.querySelectorAll('body *')].filter(e => !e.closest('.scroll') &&"
            " e.getBoundingClientRect().right > innerWidth + 1).map(e => e.tagName + '.' + e.className).slice(0, 8)"
        )
        assert small.evaluate("document.documentElement.scrollWidth <= innerWidth + 1"), (route, too_wide)
    context.close()


def test_second_tenant_sees_nothing(browser, services) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.goto(console_url(services))
    page.get_by_label("API key").fill(KEYS["bob"])
    page.keyboard.press("Enter")
    page.get_by_text("No jobs yet.").wait_for()
    page.goto(console_url(services) + "#/files")
    page.get_by_text("No files yet.").wait_for()
    page.goto(console_url(services) + f"#/jobs/{STATE['job']}")
    assert "404" in page.get_by_role("alert").first.inner_text()
    page.goto(console_url(services) + "#/graders")
    page.get_by_text("None saved yet.").wait_for()
    page.goto(console_url(services) + "#/evaluate")
    page.get_by_label("Model B").wait_for()
    assert page.get_by_role("heading", name="Earlier evaluations").count() == 0
    assert not [o for o in page.get_by_label("Model B").locator("option").all_inner_texts() if o.startswith("ft:")]
    context.close()
