"""End-to-end fixtures: the real app served by gunicorn (`run.py web`) with a real RQ worker (`run.py worker`)
on a fresh migrated + seeded database, driven by a headless Debian chromium through Playwright.

One live server per test process (so `pytest -n 2` runs two, each with its own database, Redis database and
port), on the test clock (`child_env()`), CSRF and the production settings on. Each test gets a fresh
browser context (no cookies) and a `shot(name)` that saves a screenshot under the artefacts directory
(`instance/e2e-artifacts/<test>/`, or $E2E_ARTIFACTS). A server error (5xx) seen by the browser fails the
test.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from app.embedded_redis import die_with_parent, free_port
from app.services.seed import ADMIN_PASSWORD, DEMO_PASSWORD
from tests.conftest import _recreate
from tests.helpers import DEFAULT_INSTANT, ROOT, child_env, travel

E2E_DIR = Path(__file__).parent
ARTIFACTS = Path(os.environ.get("E2E_ARTIFACTS") or Path(ROOT) / "instance" / "e2e-artifacts")
BROWSER_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
REDIS_DB = 9  # the live server's own Redis database: other tests in this process flush database 0
READY_TIMEOUT = float(os.environ.get("E2E_READY_TIMEOUT", 240))  # a busy CI machine builds the app slowly
TIMEOUT_MS = 20_000  # one step (a click, a navigation, a wait for a selector)


def pytest_collection_modifyitems(items):
    for item in items:
        if str(item.fspath).startswith(str(E2E_DIR)):
            item.add_marker(pytest.mark.e2e)


def chromium_path() -> str | None:
    """$E2E_CHROMIUM when set, else Debian's chromium (tests/e2e/ensure_browser.sh installs it) or one on
    PATH."""
    if os.environ.get("E2E_CHROMIUM"):
        return os.environ["E2E_CHROMIUM"] if os.access(os.environ["E2E_CHROMIUM"], os.X_OK) else None
    for path in BROWSER_CANDIDATES:
        if path and os.access(path, os.X_OK):
            return path
    return shutil.which("chromium") or shutil.which("chromium-browser")


# --- the live server --------------------------------------------------------------------------------
@dataclass
class LiveServer:
    url: str
    db_url: str
    redis_url: str
    logs: Path
    procs: dict = field(default_factory=dict)

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}; see {self.logs / name}.log")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def _start(name: str, args: list[str], env: dict, logs: Path) -> subprocess.Popen:
    with open(logs / f"{name}.log", "w") as log:
        return subprocess.Popen([sys.executable, os.path.join(ROOT, "run.py"), name, *args], cwd=ROOT,
                                env=env, stdout=log, stderr=subprocess.STDOUT, process_group=0,
                                preexec_fn=die_with_parent)


def _stop(procs: dict) -> None:
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for proc in procs.values():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # its group: gunicorn's workers, RQ's work horse
            proc.wait()


def _database(request, tmp: Path, template_db: Path, worker_id: str) -> str:
    """A fresh copy of the migrated and seeded database: PostgreSQL when TEST_DATABASE_URL is set, else a
    SQLite file."""
    base = os.environ.get("TEST_DATABASE_URL")
    if base:
        template = request.getfixturevalue("pg_template")
        url = make_url(base)
        name = f"{url.database}_crm_{worker_id}_e2e"
        _recreate(base, name, template=template)
        return url.set(database=name).render_as_string(hide_password=False)
    path = tmp / "e2e.db"
    shutil.copy(template_db, path)
    return f"sqlite:///{path}"


@pytest.fixture(scope="session")
def live_server(request, tmp_path_factory, worker_id):
    """gunicorn + an RQ worker, as `make run` starts them, at the suite's instant (ticking on)."""
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed "
                                                      "(pip install -r requirements-dev.txt)")
    if chromium_path() is None:
        pytest.skip("no chromium found (E2E_CHROMIUM, /usr/bin/chromium): run `make browser` "
                    "(apt-get install chromium)")
    if os.environ.get("E2E_BASE_URL"):  # a server already running (`make run`): for writing the tests
        yield LiveServer(os.environ["E2E_BASE_URL"].rstrip("/"), os.environ["E2E_DATABASE_URL"], "",
                         ARTIFACTS)
        return
    template_db = request.getfixturevalue("template_db")  # tests/conftest.py: migrated + demo data
    redis_server = request.getfixturevalue("redis_server")
    tmp = tmp_path_factory.mktemp("e2e")
    logs = ARTIFACTS / f"server-{worker_id}"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    db_url = _database(request, tmp, template_db, worker_id)
    redis_url = re.sub(r"/\d+$", f"/{REDIS_DB}", redis_server.url)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("CRM_CONFIG", "FLASK_APP")}
    env.update(CRM_CONFIG="default", DATABASE_URL=db_url, REDIS_URL=redis_url, CRM_INSTANCE_DIR=str(tmp),
               SECRET_KEY=f"e2e-{worker_id}", AUTH_RATE_LIMIT="1000 per minute",
               CRM_API_LOGIN_LIMIT="1000 per minute", PYTHONUNBUFFERED="1")
    with travel(DEFAULT_INSTANT):
        env = child_env(env)  # the children start at the suite's instant and tick on
    server = LiveServer(f"http://127.0.0.1:{port}", db_url, redis_url, logs)
    try:
        server.procs["web"] = _start("web", ["--host", "127.0.0.1", "--port", str(port)], env, logs)
        server.procs["worker"] = _start("worker", [], env, logs)
        deadline = time.monotonic() + READY_TIMEOUT
        while not _answers(f"{server.url}/login/"):
            server.check_alive()
            if time.monotonic() > deadline:
                raise AssertionError(f"the live server did not answer within {READY_TIMEOUT:g} s; see {logs}")
            time.sleep(0.2)
        yield server
    finally:
        _stop(server.procs)
        if os.environ.get("TEST_DATABASE_URL"):
            from tests.conftest import _pg_admin

            _pg_admin(os.environ["TEST_DATABASE_URL"],
                      f'DROP DATABASE IF EXISTS "{make_url(db_url).database}" WITH (FORCE)')


# --- the browser ------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def browser(live_server):
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)  # waits for a selector as long as a step may take
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=chromium_path(), headless=True,
                                      args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield chromium
        chromium.close()


class Shots:
    """Numbered screenshots of one test, in ARTIFACTS/<test name>/."""

    def __init__(self, page, directory: Path):
        self.page, self.directory, self.count = page, directory, 0

    def __call__(self, name: str) -> Path:
        self.count += 1
        path = self.directory / f"{self.count:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def page(request, browser, live_server):
    """A fresh browser context (no session) in English, on the live server. Any 5xx fails the test."""
    live_server.check_alive()
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1440, "height": 900},
                                  locale="en-US", accept_downloads=True)
    context.set_default_timeout(TIMEOUT_MS)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("response", lambda resp: resp.status >= 500 and errors.append(f"{resp.status} {resp.url}"))
    directory = ARTIFACTS / re.sub(r"[^\w.-]+", "_", request.node.name)
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    tab.shot = Shots(tab, directory)
    yield tab
    try:
        tab.shot("end")
    finally:
        context.close()
        print(f"\n[e2e] screenshots of {request.node.name}: {directory}")
    assert not errors, f"server errors: {errors}; see {live_server.logs}"


def login(page, username: str, password: str | None = None, then: str = "/") -> None:
    """Sign in through the login form, in English (on to `then`, as from a bookmark); waits until the
    browser has left the login page."""
    if password is None:
        password = ADMIN_PASSWORD if username == "admin" else DEMO_PASSWORD
    page.goto("/lang/en")
    page.goto(f"/login/?next={then}")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("input[type=submit], button[type=submit]")
    page.wait_for_url(lambda url: "/login" not in url)


def pytest_configure(config):
    config.addinivalue_line("markers", "e2e: end-to-end test in a real browser (tests/e2e)")


def logout(page) -> None:
    page.goto("/logout/")


def open_menu(page, top: str, item: str) -> None:
    """Open a page from the navigation bar, as a user does: the top menu, then its item."""
    page.locator("ul.navbar-nav > li.dropdown > a.dropdown-toggle", has_text=top).first.click()
    page.locator("ul.dropdown-menu:visible a", has_text=item).first.click()
    page.wait_for_load_state()


def list_action(page, row_ids, action_label: str) -> None:
    """Tick rows of a FAB list, choose an action from its Actions menu and confirm it."""
    for pk in row_ids:
        page.check(f"input[name=rowid][value='{pk}']")
    page.locator("button.dropdown-toggle, a.dropdown-toggle", has_text="Actions").first.click()
    page.locator("ul.dropdown-menu:visible a", has_text=action_label).first.click()
    confirm = page.locator("#modal-confirm-ok")
    confirm.wait_for(state="visible")
    confirm.click()
    page.wait_for_load_state()


def query(live_server, sql: str, **params) -> list:
    """Rows of `sql` on the live server's database: to find what a user would find by looking (ids,
    names), and to check what a flow wrote."""
    from sqlalchemy import create_engine, text

    engine = create_engine(live_server.db_url)
    try:
        with engine.begin() as conn:
            result = conn.execute(text(sql), params)
            return list(result) if result.returns_rows else []
    finally:
        engine.dispose()


def run_job(live_server, func: str, queue: str = "default", timeout: float = 120.0) -> None:
    """Enqueue `func` (dotted path) for the live server's worker and wait until it has run: what the
    scheduler (`run.py scheduler`, not started here) would do on its next tick."""
    if not live_server.redis_url:  # E2E_BASE_URL: that console runs its own scheduler
        return
    from redis import Redis
    from rq import Queue

    from tests.helpers import wait_for

    job = Queue(queue, connection=Redis.from_url(live_server.redis_url)).enqueue(func)
    status = wait_for(lambda: job.get_status(refresh=True) in ("finished", "failed") and job.get_status(),
                      f"{func} on the live server's worker", timeout=timeout, every=0.2)
    assert status == "finished", f"{func} {status}; see {live_server.logs / 'worker.log'}"
