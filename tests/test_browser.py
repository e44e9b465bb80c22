"""One real-browser test: JupyterLab in headless Chromium (Debian's ``chromium``, driven by Playwright with
``executable_path``; no browser download). It opens a tagged notebook, runs ``%nb2flow graph`` and sees the
diagram drawn (an SVG in the output), then creates a job from the scheduler's dialog and sees it complete.
Screenshots of both go to ``docs/``. Skips, saying why, where Chromium, Playwright or JupyterLab is missing."""

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from nbutil import cell, write

pytestmark = pytest.mark.slow  # a real browser: CI runs it (pytest -m slow)

DOCS = Path(__file__).resolve().parent.parent / "docs"
CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser", shutil.which("chromium") or "") if p and os.path.exists(p)), None)


def _skip_without_a_browser():
    if CHROMIUM is None:
        pytest.skip("no Chromium here (Debian: apt-get install chromium; .ci/run installs it)")
    for module, what in (("playwright", "playwright"), ("jupyterlab", "jupyterlab"), ("jupyter_scheduler", "jupyter-scheduler")):
        try:
            __import__(module)
        except ImportError:
            pytest.skip(f"{what} is not installed (pip install '.[test]')")


@pytest.fixture
def lab(tmp_path):
    from helpers import jupyter_server_running

    _skip_without_a_browser()
    with jupyter_server_running(tmp_path, "jupyterlab", "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=") as (root, base, token):
        yield root, base, token, tmp_path


def test_jupyterlab_draws_the_graph_and_runs_a_job_from_the_schedulers_dialog(lab):
    from playwright.sync_api import sync_playwright

    root, base, token, tmp = lab
    write(root / "pipeline.ipynb",
          cell("%load_ext nb2flow\n%nb2flow graph --vars"),
          cell("n = 3", "parameters"),
          cell("data = list(range(n))\nprint('loaded', len(data))", "step:load"),
          cell("total = sum(data)", "step:total"),
          cell("biggest = max(data)", "step:biggest", "after:load"),
          cell("print(f'total {total}, biggest {biggest}')", "step:report", "after:total", "after:biggest"))
    DOCS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        try:
            page.goto(f"{base}/lab/tree/pipeline.ipynb?token={token}")
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=90_000)
            page.wait_for_function("window.jupyterapp && window.jupyterapp.shell.currentWidget "
                                   "&& window.jupyterapp.shell.currentWidget.sessionContext "
                                   "&& window.jupyterapp.shell.currentWidget.sessionContext.session", timeout=90_000)
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-cell')")
            # JupyterLab's mermaid renderer draws the diagram as SVG (inline, or as an SVG image)
            drawn = page.wait_for_selector(".jp-OutputArea-output svg, .jp-OutputArea-output img[src^='data:image/svg+xml']",
                                           timeout=90_000)
            assert drawn.is_visible() and drawn.bounding_box()["height"] > 100
            svg = page.evaluate("""() => { const o = document.querySelector('.jp-OutputArea-output');
                const s = o.querySelector('svg'); if (s) return s.outerHTML;
                return decodeURIComponent(o.querySelector('img').src.split(',')[1]); }""")
            assert all(name in svg for name in ("load", "total", "biggest", "report"))  # each step is in the drawing
            no_news = page.get_by_role("button", name="No", exact=True)
            if no_news.count() and no_news.first.is_visible():  # JupyterLab's "official Jupyter news?" notice
                no_news.first.click()
                page.get_by_text("official Jupyter news").wait_for(state="hidden", timeout=10_000)
            page.screenshot(path=str(DOCS / "jupyterlab-graph.png"))

            # the scheduler's toolbar button (its settings schema names it create-job)
            page.click("[data-jp-item-name='create-job'] jp-button, [data-jp-item-name='create-job'] button", timeout=30_000)
            page.wait_for_selector("text=Create Job", timeout=30_000)
            form = page.inner_text("body")
            # nb2flow's environment (the only one, so the dialog shows no choice) and its compute types
            assert "Compute type" in form and "\nlocal\n" in form, form
            page.get_by_text("Run job with input folder").click()  # the run record and step notebooks come back too
            page.screenshot(path=str(DOCS / "jupyterlab-create-job.png"))
            page.get_by_role("button", name="Create").click()
            deadline = time.time() + 180
            while not page.get_by_text("Completed", exact=True).count():  # the list shows what it read: reload it
                assert time.time() < deadline, "the job did not complete"
                assert not page.get_by_text("Failed", exact=True).count(), "the job failed"
                page.get_by_role("button", name="Reload").click()
                page.wait_for_timeout(1500)
            page.screenshot(path=str(DOCS / "jupyterlab-job.png"))
        except Exception:
            page.screenshot(path=str(tmp / "failure.png"))
            raise
        finally:
            browser.close()
    staged = list((tmp / "data" / "scheduler_staging_area").glob("*/nb2flow-run/run.json"))
    assert staged and json.loads(staged[0].read_text())["state"] == "succeeded"
