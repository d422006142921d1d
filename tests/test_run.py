"""`python run.py all`: embedded Redis, web, worker and scheduler start, serve, and stop on Ctrl-C;
`run.py web` stops its workers gracefully (none is SIGKILLed)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar

import pytest

from app.embedded_redis import free_port
from app.services.seed import ADMIN_PASSWORD
from tests.conftest import build_database, make_config
from tests.helpers import child_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIGKILLED = "SIGKILL"  # gunicorn: "Worker (pid:…) was sent SIGKILL! Perhaps out of memory?"


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status
    except OSError:
        return 0


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory, redis_server):
    from app import create_app

    db_path = tmp_path_factory.mktemp("run") / "run.db"
    build_database(create_app(make_config(f"sqlite:///{db_path}", redis_server.url)))
    return db_path


def test_run_all_serves_and_stops_cleanly(tmp_path, demo_db):
    db_path = tmp_path / "run.db"
    db_path.write_bytes(demo_db.read_bytes())
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "CRM_CONFIG")}
    env.update(DATABASE_URL=f"sqlite:///{db_path}", CRM_INSTANCE_DIR=str(tmp_path), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "run.py", "all", "--port", str(port)], cwd=ROOT,
                            env=child_env(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    lines: list[str] = []

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        # Serving, and the banner printed: polled with a deadline, not slept on.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (
                "Demo logins" in "".join(lines) and _get(f"http://127.0.0.1:{port}/login/") == 200):
            assert proc.poll() is None, "".join(lines)
            time.sleep(0.1)
        assert _get(f"http://127.0.0.1:{port}/login/") == 200
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        reader.join(timeout=30)
    output = "".join(lines)
    assert proc.returncode == 0, output
    assert f"http://127.0.0.1:{port}/" in output
    assert "admin" in output and "Demo logins" in output
    assert "embedded Redis" in output
    assert _get(f"http://127.0.0.1:{port}/login/") == 0  # nothing left listening
    assert SIGKILLED not in output


def _browse(base: str) -> None:
    """Sign in as admin and open the pages a user opens, so that both workers build what they serve."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
    form = opener.open(f"{base}/login/", timeout=10).read().decode()
    token = re.search(r'id="csrf_token"[^>]*value="([^"]+)"', form).group(1)
    body = urllib.parse.urlencode({"csrf_token": token, "username": "admin", "password": ADMIN_PASSWORD})
    opener.open(f"{base}/login/", data=body.encode(), timeout=30).read()
    for path in ("/", "/workbench/", "/opportunityview/list/", "/employeeview/list/", "/auditlogview/list/",
                 "/dispatch/", "/callrecordview/list/", "/", "/"):
        with opener.open(f"{base}{path}", timeout=30) as resp:
            assert resp.status == 200, path


def test_web_stops_its_workers_gracefully_on_ctrl_c(tmp_path, demo_db, redis_server):
    """Ctrl-C on gunicorn: each worker exits by itself well within the graceful timeout, however much it
    built while serving — none is SIGKILLed by the arbiter."""
    db_path = tmp_path / "run.db"
    db_path.write_bytes(demo_db.read_bytes())
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "CRM_CONFIG"}
    env.update(DATABASE_URL=f"sqlite:///{db_path}", CRM_INSTANCE_DIR=str(tmp_path), PYTHONUNBUFFERED="1",
               REDIS_URL=redis_server.url)
    log_path = tmp_path / "web.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "run.py", "web", "--port", str(port)], cwd=ROOT,
                                env=child_env(env), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _get(f"http://127.0.0.1:{port}/login/") != 200:
            assert proc.poll() is None, log_path.read_text()
            time.sleep(0.1)
        _browse(f"http://127.0.0.1:{port}")
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    output = log_path.read_text()
    assert proc.returncode == 0, output
    assert output.count("Worker exiting") == 2 and "Shutting down: Master" in output, output
    assert SIGKILLED not in output, output
