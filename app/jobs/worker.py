"""RQ workers whose jobs run inside an app context (the production worker and the tests share this)."""

from __future__ import annotations

from rq import SimpleWorker, Worker

from app.extensions import db


def app_worker_class(app, base: type[Worker] = Worker) -> type[Worker]:
    """A subclass of `base` running each job inside `app.app_context()`.

    With the forking `Worker`, the job runs in a forked work horse: it drops the pool it inherited
    (without closing the parent's connections) and opens its own.
    """
    forks = not issubclass(base, SimpleWorker)

    class AppContextWorker(base):
        def perform_job(self, job, queue, *args, **kwargs):
            with app.app_context():
                if forks:
                    for engine in db.engines.values():
                        engine.dispose(close=False)
                try:
                    return super().perform_job(job, queue, *args, **kwargs)
                finally:
                    db.session.remove()

    AppContextWorker.__name__ = f"AppContext{base.__name__}"
    return AppContextWorker


def dispose_connections(app) -> None:
    """Close the app's pooled connections (before forking work horses)."""
    with app.app_context():
        for engine in db.engines.values():
            engine.dispose()
