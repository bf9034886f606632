"""The dashboard in a real browser (Debian's headless Chromium driven by Playwright), against a live gateway
with both backends simulated; jobs are made with the typed client. Screenshots of each view go to docs/."""

from __future__ import annotations

import os
import re
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.api.app import create_app
from gateway.client import Client
from gateway.core.errors import NotFound
from tests.conftest import AppThread, gateway_config, until

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "docs" / "screenshots"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),
    reason="needs Chromium from the system packages (apt-get install chromium); .ci/run installs it")
playwright = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppThread]:
    db = tmp_path_factory.mktemp("ui") / "tjg.db"
    cfg = gateway_config(f"sqlite+aiosqlite:///{db}", speed=2.0,
                         backend_extra={"metrics_sample_seconds": 0.5, "sync_interval": 0.3})
    with AppThread(lambda: create_app(cfg)) as gw:
        yield gw


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    assert CHROMIUM is not None, "CI must install chromium (see .ci/run)"
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


def sign_in(browser: Any, url: str, key: str) -> tuple[Any, list[str]]:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto(url + "/ui/")
    page.fill("#key", key)
    page.click("#signin button[type=submit]")
    page.wait_for_selector("#jobs, #no-jobs")
    return page, problems


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_assets_are_local_and_the_page_runs_under_the_strict_csp(live: AppThread, browser: Any) -> None:
    with urllib.request.urlopen(live.url + "/ui/") as r:
        html = r.read().decode()
        assert r.headers["Content-Security-Policy"].startswith("default-src 'self'")
    for name in ("app.js", "app.css"):
        with urllib.request.urlopen(f"{live.url}/ui/{name}") as r:
            text = r.read().decode()
        hosts = set(re.findall(r"https?://([^/\"'`\s]+)", text + html)) - {"www.w3.org"}  # the SVG namespace name
        assert hosts == set(), f"{name} references {hosts}"
    assert "<script>" not in html and "style=" not in html
    page, problems = sign_in(browser, live.url, "alpha-key-123")
    assert page.evaluate("sessionStorage.getItem('tjg-api-key')") == "alpha-key-123"
    assert "alpha-key-123" not in page.url
    page.close()
    assert problems == [], problems  # a CSP violation is a console error


def test_jobs_from_both_backends_change_live_filter_open_cancel_migrate(live: AppThread, browser: Any) -> None:
    tjg = Client(live.url, "alpha-key-123")
    hang = {"SIM_OUTCOME": "hang", "SIM_RUN_SECONDS": "60"}
    runai = tjg.submit({"name": "ui-runai", "backend": "runai", "image": "pytorch:24", "env": hang,
                        "resources": {"gpus": 1}, "labels": {"team": "vision"}})
    ma = tjg.submit({"name": "ui-modelarts", "backend": "modelarts", "image": "swr/x:1", "env": hang,
                     "resources": {"gpus": 1}})
    tjg.submit({"name": "ui-serve", "backend": "modelarts", "kind": "inference", "image": "swr/s:1",
                "resources": {"gpus": 1}, "serving": {"port": 8080, "min_replicas": 2}})
    page, problems = sign_in(browser, live.url, "alpha-key-123")
    for job in (runai, ma):
        page.wait_for_selector(f'tr[data-job="{job.id}"]')
    # The page was loaded while they queued; the event stream moves them to RUNNING without a reload.
    page.wait_for_selector(f'tr[data-job="{runai.id}"] .phase.RUNNING', timeout=20000)
    page.wait_for_selector(f'tr[data-job="{ma.id}"] .phase.RUNNING', timeout=20000)
    assert {r.get_attribute("data-backend") for r in page.query_selector_all("#jobs-body tr")} >= {"runai", "modelarts"}
    page.wait_for_timeout(1500)  # a few GPU-utilization samples for the metrics charts
    shot(page, "jobs")

    page.select_option("select[name=backend]", "modelarts")
    page.click("#filters button[type=submit]")
    # (wait_for_function evaluates a string, which the page's CSP refuses: poll the rows from here.)
    for _ in range(100):
        backends = {r.get_attribute("data-backend") for r in page.query_selector_all("#jobs-body tr")}
        if backends == {"modelarts"}:
            break
        page.wait_for_timeout(100)
    assert backends == {"modelarts"}
    assert page.query_selector(f'tr[data-job="{runai.id}"]') is None

    page.select_option("select[name=backend]", "")
    page.click("#filters button[type=submit]")
    page.click(f'tr[data-job="{runai.id}"] a')
    page.wait_for_selector("#job-phase")
    page.wait_for_selector('#metrics [data-metric="gpu_utilization"]', timeout=15000)
    assert page.query_selector("#report .outcome-exact") is not None
    shot(page, "job")
    logs_note = page.inner_text("#logs")
    assert "no log endpoint" in logs_note  # Run:ai: the reason from /v1/backends, not a broken view
    page.select_option("#migrate-to", "modelarts")
    assert page.eval_on_selector("#migrate-source-action", "e => e.value") == "cancel"  # no second copy by default
    page.click("#migrate-dry-run")
    page.wait_for_selector("#comparison tbody tr")
    shot(page, "migrate-dry-run")
    page.click("#migrate-confirm")
    page.wait_for_selector('[data-lineage="migrated from"]')
    moved_id = page.url.rsplit("/", 1)[-1]
    assert moved_id != runai.id and tjg.get(moved_id).migrated_from == runai.id  # the URL is the new job's
    for _ in range(100):  # the source is cancelled once the target has it
        if tjg.get(runai.id).status.phase.value in ("CANCELLING", "CANCELLED"):
            break
        page.wait_for_timeout(100)
    assert tjg.get(runai.id).status.phase.value in ("CANCELLING", "CANCELLED")

    page.goto(f"{live.url}/ui/#/job/{ma.id}")
    page.wait_for_selector('[data-action="cancel"]')
    assert page.is_disabled('[data-action="suspend"]')  # ModelArts trainings cannot be paused: the reason shows
    assert "cannot be paused" in page.inner_text("#actions")
    asked: list[str] = []
    page.once("dialog", lambda d: (asked.append(d.message), d.dismiss()))
    page.click('[data-action="cancel"]')  # asked first; dismissed: no request is made at all
    assert asked and "stops for good" in asked[0] and tjg.get(ma.id).status.phase.value == "RUNNING", asked
    page.once("dialog", lambda d: d.accept())
    page.click('[data-action="cancel"]')
    page.wait_for_selector("#job-phase .phase.CANCELLING, #job-phase .phase.CANCELLED", timeout=15000)
    assert tjg.get(ma.id).status.phase.value in ("CANCELLING", "CANCELLED")

    page.goto(f"{live.url}/ui/#/usage?group_by=backend&since=1d")
    page.wait_for_selector("#usage tbody tr")
    shot(page, "usage")
    page.goto(f"{live.url}/ui/#/backends")
    page.wait_for_selector('#backends tr[data-backend="modelarts"]')
    shot(page, "backends")
    page.close()
    assert problems == [], problems


def test_a_second_tenant_sees_none_of_the_first_tenants_jobs(live: AppThread, browser: Any) -> None:
    alpha = Client(live.url, "alpha-key-123")
    mine = alpha.submit({"name": "ui-private", "backend": "runai", "image": "x", "env": {"SIM_OUTCOME": "hang"}})
    page, _ = sign_in(browser, live.url, "beta-key-456")
    assert page.query_selector("#jobs-body tr") is None
    page.goto(f"{live.url}/ui/#/job/{mine.id}")
    page.wait_for_selector("main .error")
    assert "not found" in page.inner_text("main")
    page.close()
    with pytest.raises(NotFound):
        Client(live.url, "beta-key-456").get(mine.id)


def test_the_reason_column_and_the_why_panel(live: AppThread, browser: Any) -> None:
    tjg = Client(live.url, "alpha-key-123")
    failed = tjg.submit({"name": "ui-oom", "backend": "runai", "image": "x",
                         "env": {"SIM_OUTCOME": "oom", "SIM_RUN_SECONDS": "1"}})
    assert until(lambda: tjg.get(failed.id).status.phase.value, lambda p: p == "FAILED", within=60) == "FAILED"
    page, problems = sign_in(browser, live.url, "alpha-key-123")
    page.wait_for_selector(f'tr[data-job="{failed.id}"] [data-testid="reason"]')
    assert page.inner_text(f'tr[data-job="{failed.id}"] [data-testid="reason"]') == "oom"
    page.goto(f"{live.url}/ui/#/job/{failed.id}")
    page.wait_for_selector("#why-summary")
    assert page.inner_text("#job-reason").startswith("oom")
    assert "oom" in page.inner_text("#why-summary") and "exit code 137" in page.inner_text("#why-summary")
    assert {r.inner_text().split("\t")[0] for r in page.query_selector_all("#why-capacity tbody tr")} == \
        {"runai", "modelarts"}
    assert "memory" in page.inner_text("#why-suggestions")
    shot(page, "why")
    page.close()
    assert problems == [], problems


def test_the_attempts_timeline(live: AppThread, browser: Any) -> None:
    tjg = Client(live.url, "alpha-key-123")
    job = tjg.submit({"name": "ui-retried", "backend": "modelarts", "image": "x",
                      "env": {"SIM_OUTCOME": "node-failure,completed", "SIM_RUN_SECONDS": "1"},
                      "retry": {"on": ["node-failure"]}})
    assert until(lambda: tjg.get(job.id).status.phase.value, lambda p: p == "SUCCEEDED", within=60) == "SUCCEEDED"
    page, problems = sign_in(browser, live.url, "alpha-key-123")
    page.goto(f"{live.url}/ui/#/job/{job.id}")
    page.wait_for_selector('#attempts [data-attempt="2"]')
    labels = [e.inner_text() for e in page.query_selector_all("#attempts .attempt-label")]
    assert labels[0].startswith("#1 modelarts · FAILED (node-failure)") and \
        labels[1].startswith("#2 modelarts · SUCCEEDED"), labels
    widths = [page.eval_on_selector(f'#attempts [data-attempt="{n}"] .attempt-bar', "e => e.style.width")
              for n in (1, 2)]
    assert all(w.endswith("%") and float(w[:-1]) > 0 for w in widths), widths
    page.wait_for_selector("#why-summary")
    assert "null" not in page.inner_text("#why"), page.inner_text("#why")  # (a missing part printed "null")
    shot(page, "attempts")
    page.close()
    assert problems == [], problems
