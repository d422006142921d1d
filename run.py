#!/usr/bin/env python
"""One entry point for every process of the CRM console.

    python run.py web [--host H] [--port P]   gunicorn, 2 sync worker processes, on app:create_app()
    python run.py worker                      RQ worker on the high, default and low queues
    python run.py scheduler                   RQ CronScheduler with the jobs of app.jobs.schedule
    python run.py all [--host H] [--port P]   all three as child processes (+ an embedded Redis
                                              when REDIS_URL is unset); Ctrl-C stops everything

`worker` and `scheduler` need REDIS_URL. Run exactly one scheduler per Redis: two would enqueue
every periodic job twice.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.abspath(__file__))
CHILDREN = ("web", "worker", "scheduler")
STOP_TIMEOUT = 10.0  # seconds a child gets to stop before it is killed
HURRY_AFTER = 8.0  # a second signal then: RQ does a cold shutdown, gunicorn a quick one
READY_TIMEOUT = 60.0


def _say(message: str) -> None:
    print(f"[run.py] {message}", file=sys.stderr, flush=True)


def _redis_url() -> str:
    url = os.environ.get("REDIS_URL", "").strip()
    if not url:
        sys.exit(
            "REDIS_URL is not set: point it at a Redis server, or use `python run.py all`, "
            "which starts an embedded one"
        )
    return url


# --- web ------------------------------------------------------------------------------------------


def web(host: str, port: int) -> None:
    """Replace this process with gunicorn. Sync worker processes, never threads (FAB issue #2366)."""
    argv = [
        sys.executable, "-m", "gunicorn",
        "--chdir", ROOT,
        "--workers", "2",
        "--worker-class", "sync",
        "--threads", "1",
        "--bind", f"{host}:{port}",
        "--graceful-timeout", str(int(HURRY_AFTER) - 1),
        "--access-logfile", "-",
        "--no-control-socket",  # gunicorn 27 puts one per user in ~/.gunicorn: two instances would clash
        "run:wsgi_app()",
    ]
    os.execv(sys.executable, argv)


def wsgi_app():
    """The app each gunicorn worker serves, its start-up objects frozen out of the garbage collector.

    A worker holds some 300,000 objects once the app is built (FAB builds every view's forms). Unfrozen, the
    collections at interpreter exit walk them all, which takes seconds on a busy machine: past gunicorn's
    graceful timeout, so the arbiter SIGKILLed its workers at every Ctrl-C ("Worker was sent SIGKILL!
    Perhaps out of memory?"). Frozen, a worker exits at once, and the collections while it serves skip
    them too."""
    import gc

    from app import create_app

    app = create_app()
    gc.freeze()
    return app


# --- worker ---------------------------------------------------------------------------------------


def worker() -> None:
    """An RQ worker whose jobs each run inside an app context of one app built at start-up."""
    url = _redis_url()

    from redis import Redis

    from app import create_app
    from app.jobs.worker import app_worker_class, dispose_connections

    app = create_app()
    dispose_connections(app)  # the work horses are forked from this process
    AppContextWorker = app_worker_class(app)

    queues = app.config.get("RQ_QUEUES") or ["high", "default", "low"]
    connection = Redis.from_url(url)
    rq_worker = AppContextWorker(queues, connection=connection)
    # with_scheduler: also moves jobs enqueued with enqueue_at/enqueue_in and retry intervals.
    rq_worker.work(logging_level="INFO", with_scheduler=True)


# --- scheduler ------------------------------------------------------------------------------------


def scheduler() -> None:
    """RQ's CronScheduler with the periodic jobs of app.jobs.schedule."""
    url = _redis_url()

    from redis import Redis
    from rq.cron import CronScheduler

    from app.jobs.schedule import register

    cron = CronScheduler(connection=Redis.from_url(url))
    register(cron)
    cron.start()


# --- all ------------------------------------------------------------------------------------------


def _demo_logins() -> list[str]:
    """Lines describing the demo logins, from app.services.seed.demo_logins() when it exists."""
    try:
        from app.services.seed import demo_logins
    except ImportError:
        return []
    try:
        logins = demo_logins()
        if isinstance(logins, dict):
            logins = logins.items()
        lines = []
        for item in logins:
            if isinstance(item, dict):
                lines.append("  ".join(f"{key}: {value}" for key, value in item.items()))
            elif isinstance(item, (tuple, list)):
                lines.append(" / ".join(str(part) for part in item))
            else:
                lines.append(str(item))
        return lines
    except Exception as exc:  # the banner must not take the console down
        return [f"(could not list the demo logins: {exc!r})"]


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _start_child(name: str, args: argparse.Namespace, env: dict) -> subprocess.Popen:
    from app.embedded_redis import die_with_parent

    argv = [sys.executable, os.path.join(ROOT, "run.py"), name]
    if name == "web":
        argv += ["--host", args.host, "--port", str(args.port)]
    # Own process group, so a Ctrl-C reaches only us and we decide the order of the shutdown;
    # and the kernel stops the child if we die without cleaning up.
    return subprocess.Popen(argv, cwd=ROOT, env=env, process_group=0, preexec_fn=die_with_parent)


def _stop_children(procs: dict[str, subprocess.Popen], received: list[int]) -> None:
    """Ask each child to stop gracefully (SIGTERM: gunicorn's arbiter lets its workers finish their request
    and exit, RQ's worker finishes its job), wait up to STOP_TIMEOUT s (hurrying them with SIGINT at
    HURRY_AFTER: gunicorn's quick shutdown, RQ's cold one), then kill what is left (at once on a second
    Ctrl-C)."""
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    signals_seen = len(received)
    start = time.monotonic()
    hurried = False
    while any(proc.poll() is None for proc in procs.values()):
        waited = time.monotonic() - start
        if waited >= STOP_TIMEOUT or len(received) > signals_seen:  # timeout, or Ctrl-C pressed again
            break
        if waited >= HURRY_AFTER and not hurried:
            hurried = True
            for proc in procs.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGINT)
        time.sleep(0.1)
    for name, proc in procs.items():
        if proc.poll() is None:
            _say(f"{name} did not stop in time: killing it")
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # its whole group: gunicorn's workers too
            except ProcessLookupError:
                pass
            proc.wait()


def run_all(args: argparse.Namespace) -> int:
    received: list[int] = []

    def on_signal(signum, _frame):
        received.append(signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    embedded = None
    procs: dict[str, subprocess.Popen] = {}
    exit_code = 0
    try:
        if not env.get("REDIS_URL", "").strip():
            from app.embedded_redis import EmbeddedRedis

            embedded = EmbeddedRedis()
            env["REDIS_URL"] = embedded.url
            _say(f"embedded Redis at {embedded.url} (nothing is persisted)")
        for name in CHILDREN:
            if received:
                break
            procs[name] = _start_child(name, args, env)

        probe_host = "127.0.0.1" if args.host in ("", "0.0.0.0", "::") else args.host
        started = time.monotonic()
        banner_shown = False
        while not received:
            dead = [(name, proc.returncode) for name, proc in procs.items() if proc.poll() is not None]
            if dead:
                name, code = dead[0]
                _say(f"{name} exited with code {code}: stopping the rest")
                exit_code = code if code and code > 0 else 1
                break
            if not banner_shown and (
                _answers(probe_host, args.port) or time.monotonic() - started > READY_TIMEOUT
            ):
                banner_shown = True
                _print_banner(probe_host, args.port, answering=_answers(probe_host, args.port))
            time.sleep(0.2)
    finally:
        if received:
            _say(f"got {signal.Signals(received[0]).name}: stopping web, worker and scheduler")
        _stop_children(procs, received)
        if embedded is not None:
            embedded.stop()
        _say("stopped")
    return exit_code


def _print_banner(host: str, port: int, answering: bool) -> None:
    url = f"http://{host}:{port}/"
    lines = [f"CRM console: {url}" + ("" if answering else f" (not answering after {READY_TIMEOUT:g} s)")]
    logins = _demo_logins()
    if logins:
        lines.append("Demo logins:")
        lines += [f"  {line}" for line in logins]
    lines.append("Ctrl-C stops everything.")
    width = max(len(line) for line in lines)
    rule = "=" * width
    print("\n".join(["", rule, *lines, rule, ""]), flush=True)


# --- command line ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("process", choices=[*CHILDREN, "all"], help="what to run")
    parser.add_argument("--host", default="127.0.0.1", help="web: address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=5000, help="web: port to bind (default 5000)")
    args = parser.parse_args(argv)
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    if args.process == "web":
        web(args.host, args.port)
    elif args.process == "worker":
        worker()
    elif args.process == "scheduler":
        scheduler()
    else:
        return run_all(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
