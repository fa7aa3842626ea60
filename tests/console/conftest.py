"""The web console in a real browser: Chromium from the system's packages driven by Playwright
(the Python package, pointed at the system browser; nothing is downloaded), against a real
``hybridrec serve --demo`` with access control on (an admin key and a read-only key exist before
it starts). Every test saves a screenshot of each of its pages under its tmp_path when it fails;
``CONSOLE_TESTS_SHOTS=DIR`` saves the named screenshots the tests take along the way too."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from service.access import AccessKeys

CHROMIUM = os.environ.get("CONSOLE_TESTS_CHROMIUM") or (
    "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else shutil.which("chromium") or "/usr/bin/chromium")
SHOTS = os.environ.get("CONSOLE_TESTS_SHOTS")
EVALUATION = Path(__file__).resolve().parents[2] / "benchmarks" / "eval"  # the report the repository keeps
REQUIRED = os.environ.get("CONSOLE_TESTS_REQUIRED") == "1"  # CI: a missing browser fails, never skips


def why_skip() -> str | None:
    """One line saying how to enable these tests, or None when they can run."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "no playwright: pip install -e '.[dev]' (make install does it)"
    if not os.access(CHROMIUM, os.X_OK):
        return f"no Chromium at {CHROMIUM}: apt-get install -y chromium (CI installs it), or set CONSOLE_TESTS_CHROMIUM"
    return None


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item, so a fixture can tell that its test failed."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


@dataclass
class Server:
    base: str
    admin_key: str
    read_key: str
    proc: subprocess.Popen


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def browser():
    reason = why_skip()
    if reason and REQUIRED:
        pytest.fail(f"CONSOLE_TESTS_REQUIRED=1 but {reason}")
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def server(browser, tmp_path_factory) -> Server:
    """``hybridrec serve --demo`` on a free loopback port and a fresh data directory, with access
    control on, and the repository's evaluation report where the service looks for one. Rate limits
    are off: the tests share one key and one address."""
    data_dir = tmp_path_factory.mktemp("console") / "data"
    (data_dir / "evaluation").mkdir(parents=True)
    for name in ("report.md", "results.json", *(p.name for p in EVALUATION.glob("*.png"))):
        shutil.copy(EVALUATION / name, data_dir / "evaluation" / name)
    keys = AccessKeys(data_dir)
    admin = keys.create("console-admin", ["read", "write", "admin"]).secret
    read = keys.create("console-read", ["read"]).secret
    keys.close()
    port = free_port()
    log = open(data_dir.parent / "server.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--demo", "--port", str(port), "--data-dir", str(data_dir)],
        stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "HYBRIDREC_LOG_LEVEL": "warning", "HYBRIDREC_READ_RATE_LIMIT": "0",
             "HYBRIDREC_WRITE_RATE_LIMIT": "0", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {(data_dir.parent / 'server.log').read_text()[-2000:]}")
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not come up within 120 s")
            time.sleep(0.2)
        yield Server(base, admin, read, proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


@pytest.fixture
def open_console(browser, server, request, tmp_path):
    """``open_console(path="#/try", key=<admin key>, width=1280)``: a page of the console in a new
    browser context (its own sessionStorage), the key given as if typed into the key box.
    JavaScript errors fail the test; a failing test leaves failure-N.png under tmp_path."""
    contexts, pages, errors = [], [], []

    def open_page(path: str = "#/try", key: str | None = "admin", width: int = 1280, height: int = 900):
        context = browser.new_context(viewport={"width": width, "height": height})
        contexts.append(context)
        secret = {"admin": server.admin_key, "read": server.read_key}.get(key, key)
        if secret:
            context.add_init_script(f"sessionStorage.setItem('hybridrec.apiKey', {json.dumps(secret)})")
        context.set_default_timeout(15_000)
        page = context.new_page()
        page.on("pageerror", lambda err: errors.append(f"{page.url}: {err}"))
        pages.append(page)
        page.goto(f"{server.base}/console/{path}")
        return page

    yield open_page
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        for n, page in enumerate(pages):
            try:
                page.screenshot(path=str(tmp_path / f"failure-{n}.png"), full_page=True)
            except Exception as exc:  # the page may be gone; the test's own failure says more
                print(f"no screenshot of page {n}: {exc}")
        print(f"screenshots of the failed test: {tmp_path}")
    for context in contexts:
        context.close()
    assert not errors, f"JavaScript errors in the console: {errors}"


@pytest.fixture
def shot():
    """``shot(page, name)``: a named screenshot for the record, when CONSOLE_TESTS_SHOTS names a folder."""

    def take(page, name: str) -> None:
        if SHOTS:
            Path(SHOTS).mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)

    return take
