"""The tester notebook in a real browser: JupyterLab + headless Debian chromium via Playwright.

The test builds a tiny ``is_question`` model whose provenance points to a temporary blueprint
folder, starts JupyterLab on 127.0.0.1 (random free port, token), opens a temporary copy of
``notebooks/10_tester.ipynb``, runs all cells, asks ``今天天气怎么样？`` and checks the rendered
answer, a correction and a batch. A screenshot goes to ``test-output/lab_tester.png``.

Run as a script it takes the screenshot of the docs on any models dir::

    .venv/bin/python tests/test_lab_browser.py --models-dir models --out docs/tester.png
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

try:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
except ImportError:  # the test skips; the names must still resolve
    PlaywrightTimeout = TimeoutError

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO / "notebooks" / "10_tester.ipynb"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
                 "--disable-dev-shm-usage"]
QUESTION = "今天天气怎么样？"
SERVER_START_S = 90
KERNEL_READY_MS = 180_000  # kernel start + imports on a busy 2-core machine
ANSWER_MS = 60_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _quiet_lab_settings(settings_dir: Path) -> None:
    """No news/update toasts: they would cover the page in the screenshot."""
    target = (settings_dir / "@jupyterlab" / "apputils-extension"
              / "notification.jupyterlab-settings")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))


def _wait_for_server(proc: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with {proc.returncode}:\n"
                               f"{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"JupyterLab did not answer within {SERVER_START_S} s:\n"
                       f"{log.read_text()[-3000:]}")


@contextmanager
def jupyterlab(root: Path, models_dir: Path, work: Path) -> Iterator[str]:
    """Run JupyterLab on 127.0.0.1 serving ``root``; yield the base URL with its token.

    The server gets its own process group (killed, kernels included, on exit) and culls idle
    kernels then shuts itself down, so even a killed test leaves nothing running for long.
    """
    port, token = _free_port(), os.urandom(16).hex()
    env = {
        **os.environ,
        "FOUNDRY_MODELS_DIR": str(models_dir),
        "FOUNDRY_RUNS_DIR": str(work / "runs"),  # the tester remembers its last task there
        "JUPYTER_CONFIG_DIR": str(work / "config"),
        "JUPYTER_RUNTIME_DIR": str(work / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(work / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(work / "workspaces"),
    }
    _quiet_lab_settings(work / "settings")
    cmd = [
        sys.executable, "-m", "jupyterlab", "--no-browser", f"--IdentityProvider.token={token}",
        "--ServerApp.ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={root}", "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--ServerApp.shutdown_no_activity_timeout=300",
        "--MappingKernelManager.cull_idle_timeout=300", "--MappingKernelManager.cull_interval=60",
        "--MappingKernelManager.cull_connected=True", "--LabApp.extension_manager=readonly",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # CI containers run as root
    log = work / "jupyterlab.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_for_server(proc, f"{base}/api/status?token={token}", log)
        yield f"{base}/lab/tree/{NOTEBOOK.name}?token={token}"
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    """Stop the server's process group: SIGTERM (it shuts its kernels down), then SIGKILL
    whatever is left of the group (a kernel of a server that died early, say)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=20)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=20)


def run_all_cells(page) -> None:
    """Run > Run All Cells, through the menus as a person would, once the kernel is idle.

    Running before the kernel is attached makes JupyterLab ask for a kernel instead.
    """
    page.locator(".jp-Notebook").first.wait_for(state="visible", timeout=KERNEL_READY_MS)
    page.locator(".jp-StatusBar-TextItem", has_text=re.compile(r"\|\s*Idle")).first.wait_for(
        state="visible", timeout=KERNEL_READY_MS)
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
    dialog = page.locator(".jp-Dialog", has_text="Select Kernel")
    with contextlib.suppress(PlaywrightTimeout):
        dialog.wait_for(state="visible", timeout=3_000)
        dialog.locator(".jp-mod-accept").click()  # the notebook's own kernel is preselected


def ask(page, text: str):
    """Type ``text`` into the tester, press Enter, return the answer element."""
    box = page.locator(".foundry-text input")
    box.wait_for(state="visible", timeout=KERNEL_READY_MS)
    box.fill(text)
    box.press("Enter")
    answer = page.locator(".foundry-answer")
    answer.wait_for(state="visible", timeout=ANSWER_MS)
    return answer


@contextmanager
def browser_page(url: str, height: int = 960) -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                     headless=True, timeout=60_000)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": height})
            page.set_default_timeout(ANSWER_MS)
            page.goto(url, timeout=120_000)
            yield page
        finally:
            browser.close()


def serve_notebook(work: Path) -> Path:
    """A temporary root holding a copy of the tester (the repo's copy must not get outputs)."""
    root = work / "root"
    root.mkdir(parents=True)
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    return root


def _write_models(models_dir: Path, blueprint_dir: Path) -> None:
    """A tiny is_question model forged, says its provenance, from ``blueprint_dir``'s name."""
    from conftest import fit_tiny, install_model
    from fakes.tiny_blueprint import write_tiny_blueprint

    from foundry.export import Provenance

    write_tiny_blueprint(blueprint_dir, name=blueprint_dir.name, exam=(("几点了", "Question"),))
    install_model(fit_tiny(), models_dir, "is_question", 0.6,
                  provenance=Provenance(blueprint=blueprint_dir.name))


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.skipif(not CHROMIUM.exists(),
                    reason="needs Debian's chromium at /usr/bin/chromium: apt-get install chromium")
def test_tester_answers_in_a_real_browser(tmp_path, monkeypatch):
    pytest.importorskip("playwright.sync_api")
    # The lab writes corrections only into a blueprint under the blueprints folder.
    monkeypatch.setenv("FOUNDRY_BLUEPRINTS_DIR", str(tmp_path / "blueprints"))
    blueprint_dir = tmp_path / "blueprints" / "browser_bp"
    models_dir = tmp_path / "models"
    _write_models(models_dir, blueprint_dir)
    shot = REPO / "test-output" / "lab_tester.png"
    shot.parent.mkdir(exist_ok=True)

    failure = shot.with_name("lab_tester_failure.png")
    with jupyterlab(serve_notebook(tmp_path), models_dir, tmp_path) as url, \
            browser_page(url) as page, _screenshot_on_failure(page, failure):
        _check_tester(page, shot, blueprint_dir)
    assert shot.stat().st_size > 10_000


@contextmanager
def _screenshot_on_failure(page, path: Path) -> Iterator[None]:
    """Keep what the browser showed when a step failed (the server log is in the tmp dir)."""
    try:
        yield
    except Exception:
        with contextlib.suppress(Exception):
            page.screenshot(path=str(path))
        raise


def _check_tester(page, shot: Path, blueprint_dir: Path) -> None:
    """Ask, check answer and bar, screenshot, correct, classify a batch."""
    run_all_cells(page)
    answer = ask(page, QUESTION)
    label = answer.locator(".foundry-label")
    assert label.inner_text().strip() == "Question"
    assert answer.get_attribute("data-label") == "Question"
    bars = answer.locator(".foundry-bar")
    assert bars.count() == 2
    fill = answer.locator('.foundry-bar-row[data-label="Question"] .foundry-bar-fill')
    outer = answer.locator('.foundry-bar-row[data-label="Question"] .foundry-bar')
    # The bar is drawn, and its width is the probability (> 0.5 for the winning label).
    ratio = fill.bounding_box()["width"] / outer.bounding_box()["width"]
    assert 0.5 < ratio <= 1.0
    assert answer.locator(".foundry-chip").count() > 0
    page.screenshot(path=str(shot))

    # The corrections loop, end to end: the click appends to the blueprint's log.
    page.locator(".foundry-correct", has_text="Statement").click()
    page.locator(".foundry-correction-status", has_text="Saved").wait_for(timeout=ANSWER_MS)
    log = blueprint_dir / "corrections" / "is_question.jsonl"
    rows = [json.loads(line) for line in log.read_text("utf-8").splitlines()]
    assert [(r["text"], r["label"]) for r in rows] == [(QUESTION, "Statement")]

    # Batch: two lines become two table rows.
    page.locator(".foundry-batch-input textarea").fill("打开客厅的灯\n你吃饭了吗？")
    page.locator(".foundry-batch-run").click()
    page.locator(".foundry-batch-table").wait_for(timeout=ANSWER_MS)
    assert page.locator(".foundry-batch-row").count() == 2
    # The link is a second widget, updated after the table: its message can arrive later.
    page.locator(".foundry-csv-link").wait_for(timeout=ANSWER_MS)
    assert page.locator(".foundry-csv-link").count() == 1


def screenshot(models_dir: Path, out: Path, text: str = QUESTION, task: str | None = None,
               batch: Sequence[str] = ()) -> None:
    """Open the tester on ``models_dir``, ask ``text`` (and a batch); screenshot it to ``out``."""
    with tempfile.TemporaryDirectory() as tmp, \
            jupyterlab(serve_notebook(Path(tmp)), models_dir.resolve(), Path(tmp)) as url, \
            browser_page(url, height=1250 if batch else 960) as page:
        run_all_cells(page)
        # Fold the file browser: more room for the tester.
        page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current").first.click()
        if task:
            page.locator(".foundry-task select").select_option(task)
        ask(page, text)
        if batch:
            page.locator(".foundry-batch-input textarea").fill("\n".join(batch))
            page.locator(".foundry-batch-run").click()
            page.locator(".foundry-batch-table").wait_for(timeout=ANSWER_MS)
        page.locator(".foundry-tester").scroll_into_view_if_needed()
        page.wait_for_timeout(500)
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="screenshot the tester lab")
    parser.add_argument("--models-dir", type=Path, default=REPO / "models")
    parser.add_argument("--out", type=Path, default=REPO / "test-output" / "tester.png")
    parser.add_argument("--text", default=QUESTION)
    parser.add_argument("--task", default=None)
    parser.add_argument("--batch", action="append", default=[], help="a batch line (repeatable)")
    args = parser.parse_args()
    screenshot(args.models_dir, args.out, args.text, args.task, args.batch)
    print(args.out)
