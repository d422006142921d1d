"""RQ entry points.

A job here is thin: it takes ids (never ORM objects), calls a service, commits, and returns something
small. The worker (`python run.py worker`) runs every job inside a Flask app context, so jobs use
`app.extensions.db` and `current_app.config` as a request would. Every job is safe to run twice
(idempotent) and safe to kill at any moment: bulk work commits in fixed-size chunks, so a killed job
loses at most one chunk and the next run carries on where it stopped.

Periodic jobs are registered in `app.jobs.schedule` and enqueued by `python run.py scheduler`.
"""
