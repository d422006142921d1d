"""`python run.py all`: embedded Redis, web, worker and scheduler start, serve, and stop on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

from app.embedded_redis import free_port
from tests.conftest import build_database, make_config
from tests.helpers import child_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status
    except OSError:
        return 0


def test_run_all_serves_and_stops_cleanly(tmp_path, redis_server):
    from app import create_app

    db_path = tmp_path / "run.db"
    build_database(create_app(make_config(f"sqlite:///{db_path}", redis_server.url)))
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
