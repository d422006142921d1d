#!/usr/bin/env python
"""`make fuzz`: schemathesis against the running app on a fresh PostgreSQL database.

    TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test python tests/fuzz/run_fuzz.py

Creates `<TEST_DATABASE_URL's database>_fuzz`, prepares it as `make run` does (migrate, sync-roles,
sync-reference, seed-demo), starts a private Redis and the web server (`run.py web`, gunicorn) on a free
loopback port, takes a JWT for a salesperson and for the administrator, saves the app's OpenAPI document,
and runs schemathesis over it once per login: all checks (with the exceptions in schemathesis.toml, each
explained there), a fixed seed, a bounded number of examples per operation. Stops everything it started
and drops the database, whatever happens. Exit status 0 only when both runs pass. Reports (JUnit,
NDJSON, and `<user>.failures.txt`: one line per distinct failure) go to FUZZ_REPORT_DIR.

Settings (environment): FUZZ_SEED (default 11), FUZZ_MAX_EXAMPLES (default 5), FUZZ_PHASES (default
examples,coverage,fuzzing), FUZZ_WORKERS (default 1), FUZZ_REPORT_DIR (default instance/fuzz), FUZZ_USERS
(default "sales11 admin"), SCHEMATHESIS (the executable; default the one beside this Python),
FUZZ_KEEP_DB=1 keeps the database.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)

from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from app.embedded_redis import EmbeddedRedis  # noqa: E402
from app.services.seed import ADMIN_PASSWORD, DEMO_PASSWORD  # noqa: E402

READY_TIMEOUT = 90.0


def say(message: str) -> None:
    print(f"[fuzz] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pg_admin(base_url: str, *statements: str) -> None:
    engine = create_engine(make_url(base_url), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        for statement in statements:
            conn.execute(text(statement))
    engine.dispose()


def prepare_database(env: dict) -> None:
    """The steps of `make run` before the servers start."""
    flask = [sys.executable, "-m", "flask", "--app", "app:create_app"]
    for step in (["db", "upgrade"], ["crm", "sync-roles"], ["crm", "sync-reference"], ["crm", "seed-demo"]):
        say(" ".join(step))
        subprocess.run(flask + step, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)


def request_json(url: str, body: dict | None = None, token: str | None = None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.load(resp)


def wait_ready(base: str, web: subprocess.Popen) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if web.poll() is not None:
            raise SystemExit(f"the web server exited with {web.returncode}")
        try:
            urllib.request.urlopen(base + "/login/", timeout=5).read()
            return
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    raise SystemExit("the web server did not answer in time")


def stop(process: subprocess.Popen | None, timeout: float = 15.0) -> None:
    """SIGTERM to the process group we started, then SIGKILL when it lingers."""
    if process is None or process.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def schemathesis_cmd() -> str:
    exe = os.environ.get("SCHEMATHESIS") or os.path.join(os.path.dirname(sys.executable), "schemathesis")
    if not (os.path.exists(exe) or shutil.which(exe)):
        raise SystemExit(f"schemathesis not found ({exe}): install requirements-dev.txt")
    return exe


def fuzz(exe: str, spec: str, base: str, user: str, token: str, report_dir: str) -> int:
    seed = os.environ.get("FUZZ_SEED", "11")
    argv = [exe, "--config-file", os.path.join(HERE, "schemathesis.toml"), "run", spec, "--url", base,
            "--header", f"Authorization: Bearer {token}", "--header", "Accept-Language: en",
            "--seed", seed,  # every check runs (schemathesis 4's default; `--checks all` would override the
            # per-operation exceptions of schemathesis.toml)
            "--max-examples", os.environ.get("FUZZ_MAX_EXAMPLES", "5"),
            "--phases", os.environ.get("FUZZ_PHASES", "examples,coverage,fuzzing"),
            # One worker: Hypothesis parses lambdas' source for its messages, and ast.parse in two threads
            # at once fails on Python 3.11 before 3.11.9 ("AST constructor recursion depth mismatch",
            # CPython gh-106905); one worker also makes the run repeatable (no interleaved writes).
            "--workers", os.environ.get("FUZZ_WORKERS", "1"), "--request-timeout", "30", "--no-shrink",
            "--suppress-health-check", "all", "--warnings", "off",
            "--report", "junit,ndjson",
            "--report-junit-path", os.path.join(report_dir, f"{user}.junit.xml"),
            "--report-ndjson-path", os.path.join(report_dir, f"{user}.ndjson")]
    say(f"schemathesis as {user} (seed {seed})")
    with open(os.path.join(report_dir, f"{user}.txt"), "w") as out:
        proc = subprocess.run(argv, cwd=report_dir, stdout=out, stderr=subprocess.STDOUT,  # its cache there
                              env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_TELEMETRY": "false"})
    with open(os.path.join(report_dir, f"{user}.txt")) as out:
        tail = out.read().splitlines()[-12:]
    failures = summarize(os.path.join(report_dir, f"{user}.ndjson"))
    with open(os.path.join(report_dir, f"{user}.failures.txt"), "w") as out:
        out.write("\n".join(failures) + "\n")
    print("\n".join(tail + [f"{len(failures)} distinct failures as {user}:"] + failures), flush=True)
    return proc.returncode


def spec_is_valid(spec: str) -> bool:
    """openapi-spec-validator's verdict on the saved document (printed when it finds errors)."""
    from openapi_spec_validator import OpenAPIV30SpecValidator

    with open(spec) as src:
        errors = list(OpenAPIV30SpecValidator(json.load(src)).iter_errors())
    for error in errors:
        say(f"OpenAPI: {'/'.join(map(str, error.path))}: {error.message[:200]}")
    say(f"OpenAPI document: {len(errors)} errors")
    return not errors


def summarize(ndjson: str) -> list[str]:
    """One line per distinct failure in a schemathesis NDJSON report: check, operation, status, message;
    and one per error of the run itself (schemathesis could not test an operation)."""
    found: dict[tuple, int] = {}
    with open(ndjson) as events:
        for line in events:
            error = json.loads(line).get("NonFatalError")
            if error:
                value = error.get("value") or {}
                message = f"{value.get('type')}: {value.get('message')}"
                key = ("error", error.get("label") or "", "-", message[:160])
                found[key] = found.get(key, 0) + 1
            event = json.loads(line).get("ScenarioFinished")
            if not event or event.get("status") != "failure":
                continue
            recorder = event["recorder"]
            for case_id, checks in recorder.get("checks", {}).items():
                for check in checks:
                    if check.get("status") != "failure":
                        continue
                    failure = (check.get("failure_info") or {}).get("failure") or {}
                    answer = (recorder.get("interactions", {}).get(case_id) or {}).get("response") or {}
                    case = (recorder.get("cases", {}).get(case_id) or {}).get("value") or {}
                    message = (failure.get("message") or failure.get("title") or "").strip().splitlines()
                    key = (check["name"], failure.get("operation") or recorder.get("label"),
                           f"{case.get('method', '?')} {answer.get('status_code', '-')}",
                           message[0][:160] if message else "")
                    found[key] = found.get(key, 0) + 1
    return [f"{n:4d}x  {check:30s} {operation:50s} {status:10s} {message}"
            for (check, operation, status, message), n in sorted(found.items(), key=lambda kv: kv[0][:2])]


def main() -> int:
    base_url = os.environ.get("TEST_DATABASE_URL")
    if not base_url:
        raise SystemExit("set TEST_DATABASE_URL (e.g. postgresql://postgres@127.0.0.1:5432/test)")
    exe = schemathesis_cmd()
    url = make_url(base_url)
    name = f"{url.database}_fuzz"
    db_url = url.set(database=name).render_as_string(hide_password=False)
    report_dir = os.path.abspath(os.environ.get("FUZZ_REPORT_DIR", os.path.join(ROOT, "instance", "fuzz")))
    os.makedirs(report_dir, exist_ok=True)
    users = os.environ.get("FUZZ_USERS", "sales11 admin").split()

    pg_admin(base_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"')
    redis = EmbeddedRedis()
    web = web_log = None
    try:
        env = {**os.environ, "CRM_CONFIG": "default", "DATABASE_URL": db_url, "REDIS_URL": redis.url,
               "SECRET_KEY": os.urandom(16).hex(), "FLASK_DEBUG": "0",
               # the fuzzer logs in once per user; its own hammering of the login API may meet the limit
               "CRM_API_LOGIN_LIMIT": "1000 per minute"}
        prepare_database(env)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        web_log = open(os.path.join(report_dir, "web.log"), "w")  # closed in `finally`
        argv = [sys.executable, "run.py", "web", "--host", "127.0.0.1", "--port", str(port)]
        web = subprocess.Popen(argv, cwd=ROOT, env=env, start_new_session=True, stdout=web_log,
                               stderr=subprocess.STDOUT)
        wait_ready(base, web)
        say(f"web on {base}")
        tokens = {}
        for user in users:
            password = ADMIN_PASSWORD if user == "admin" else DEMO_PASSWORD
            login = {"username": user, "password": password, "provider": "db"}
            tokens[user] = request_json(base + "/api/v1/security/login", login)["access_token"]
        spec = os.path.join(report_dir, "openapi.json")
        with open(spec, "w") as out:
            json.dump(request_json(base + "/api/v1/_openapi", token=tokens[users[-1]]), out, indent=1)
        failed = [] if spec_is_valid(spec) else ["the OpenAPI document"]
        failed += [user for user in users if fuzz(exe, spec, base, user, tokens[user], report_dir) != 0]
        say(f"reports in {report_dir}; failed: {', '.join(failed) or 'none'}")
        return 1 if failed else 0
    finally:
        stop(web)
        if web_log is not None:
            web_log.close()
        redis.stop()
        if not os.environ.get("FUZZ_KEEP_DB"):
            pg_admin(base_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    sys.exit(main())
