"""The Jobs page (/jobs/): running and recent job runs with their progress, how they ended, and a link to
what each worked on. Administrators (can_view_all on JobRun) see every run; others the runs they started."""

from __future__ import annotations

from flask import abort, current_app, g, jsonify, request, url_for
from flask_appbuilder import BaseView, expose
from flask_appbuilder.security.decorators import has_access
from flask_babel import lazy_gettext as _l
from sqlalchemy import func, select

from app.clock import utcnow
from app.extensions import db
from app.models import jobs as kinds
from app.models.jobs import ACTIVE, CANCELLED, COMPLETED, FAILED, QUEUED, RUNNING, JobRun
from app.security import policy
from app.security.scope import current_viewer
from app.services import runner
from app.views import labels, uow

PAGE_SIZE = 50
MAX_PAGE = 100_000  # beyond this a page number is noise (and an offset PostgreSQL would refuse)
KIND_LABELS = {
    kinds.LEAD_IMPORT: _l("Lead import"), kinds.SMS_CAMPAIGN_PREPARE: _l("Campaign preparation"),
    kinds.SMS_CAMPAIGN_SEND: _l("Campaign sending"), kinds.DISPATCH: _l("Dispatch run"),
    kinds.CIRCULATION_SCAN: _l("Circulation scan"), kinds.EXPORT: _l("Export"),
    "learning_import": _l("Learning import"), kinds.TAG_REFRESH: _l("Rule tags"),
    kinds.TAG_IMPORT: _l("Tag import"), kinds.SCORING: _l("Win probability"),
}
STATUS_LABELS = dict(labels.choices("job.status"))  # not "Running": that msgid reads 导入中 (lead imports)
STATUS_CLASSES = {QUEUED: "default", RUNNING: "info", COMPLETED: "success", FAILED: "danger",
                  CANCELLED: "warning"}
#: target_type → (endpoint of its page, label)
TARGETS = {
    "lead_import": ("LeadImportView.show", _l("Lead import")),
    "sms_campaign": ("SmsCampaignView.show", _l("SMS campaign")),
}


def sees_all() -> bool:
    return current_viewer().can(policy.VIEW_ALL, policy.JOB_RUN)


def visible(stmt):
    """Limit `stmt` (over JobRun) to the runs the current user may see."""
    if sees_all():
        return stmt
    return stmt.where(JobRun.started_by_fk == getattr(g.user, "id", None))


def target_link(run: JobRun) -> tuple[str | None, str]:
    """(URL of what `run` worked on or None, its label)."""
    if run.target_type is None:
        return None, "—"
    endpoint, label = TARGETS.get(run.target_type, (None, run.target_type))
    text = f"{label} #{run.target_id}" if run.target_id is not None else str(label)
    if endpoint and endpoint in current_app.view_functions and run.target_id is not None:
        return url_for(endpoint, pk=run.target_id), text
    return None, text


def heartbeat_age(run: JobRun, now) -> int | None:
    """Seconds since the run's last heartbeat, while it is running."""
    if run.status != RUNNING or run.heartbeat_at is None:
        return None
    return max(0, int((now - run.heartbeat_at).total_seconds()))


class JobsView(BaseView):
    route_base = "/jobs"
    class_permission_name = policy.JOB_RUN
    method_permission_name = {"list": "read", "show": "read", "progress": "read", "cancel": "write"}
    # can_view_all is declared here so that it exists (and the Admin role gets it): see sees_all().
    base_permissions = [policy.READ, policy.WRITE, policy.VIEW_ALL]
    default_view = "list"

    def _helpers(self) -> dict:
        return {"kind_labels": KIND_LABELS, "status_labels": STATUS_LABELS, "status_classes": STATUS_CLASSES,
                "target_link": target_link, "heartbeat_age": heartbeat_age, "now": utcnow(),
                "sees_all": sees_all()}

    def _run(self, pk) -> JobRun:
        run = db.session.scalar(visible(select(JobRun).where(JobRun.id == int(pk))))
        if run is None:
            abort(404)
        return run

    @expose("/")
    @has_access
    def list(self):
        status = request.args.get("status") or None
        page = min(MAX_PAGE, max(0, request.args.get("page", 0, type=int)))  # an OFFSET PostgreSQL takes
        stmt = visible(select(JobRun))
        if status == "active":
            stmt = stmt.where(JobRun.status.in_(ACTIVE))
        elif status in STATUS_LABELS:
            stmt = stmt.where(JobRun.status == status)
        count = db.session.scalar(select(func.count()).select_from(stmt.subquery()))
        runs = db.session.scalars(stmt.order_by(JobRun.id.desc()).offset(page * PAGE_SIZE)
                                  .limit(PAGE_SIZE)).all()
        return self.render_template("jobs/list.html", runs=runs, count=count, page=page,
                                    pages=(count + PAGE_SIZE - 1) // PAGE_SIZE, status=status,
                                    title=_l("Jobs"), **self._helpers())

    @expose("/show/<int:pk>")
    @has_access
    def show(self, pk):
        run = self._run(pk)
        return self.render_template("jobs/show.html", run=run, title=_l("Job run"), **self._helpers())

    @expose("/progress/<int:pk>")
    @has_access
    def progress(self, pk):
        return jsonify(runner.progress(self._run(pk)))

    @expose("/cancel/<int:pk>", methods=["POST"])
    @has_access
    def cancel(self, pk):
        run = self._run(pk)
        return uow.flash_result(lambda: runner.cancel(db.session, run.id, g.user),
                                back=url_for(".show", pk=run.id), success=lambda r: _l("Job cancelled"))
