"""RQ entry points.

A job here is thin: it takes ids (never ORM objects), calls a service, commits, and returns something
small. The worker (`python run.py worker`) runs every job inside a Flask app context, so jobs use
`app.extensions.db` and `current_app.config` as a request would. Every job is safe to run twice
(idempotent) and safe to kill at any moment: bulk work commits in fixed-size chunks, so a killed job
loses at most one chunk and the next run carries on where it stopped.

Every long job (lead import, campaign preparation and sending, dispatch runs, the circulation scan,
exports) runs through the job runner (app.services.runner): a JobRun row per run, a handler here
registered with `@runner.handler(kind)`, progress and position saved with each chunk, a heartbeat, and a
watchdog that re-enqueues runs whose worker died. Their RQ entry point is `app.jobs.runner.execute`.

Periodic jobs are registered in `app.jobs.schedule` and enqueued by `python run.py scheduler`.
"""
