"""The export job (a job run of kind "export", see app.services.runner): a big filtered list written to a
file under the instance folder, chunk by chunk, resuming from its saved position.

The run's params hold who asked (user id), which list (view class name), the list's request arguments
(filters, quick filter), the format, the language and the columns. At run time the job rebuilds that
request for that user — so the data scope, the phone masking and the right to export are those of the
person who asked, as they are now, never those of the worker — and lets the list's view build the plan
(app.views.export.CsvExportMixin.export_plan); app.services.exports writes the file.
"""

from __future__ import annotations

from flask import current_app, g

from app.extensions import db
from app.models.employee import CrmUser
from app.models.jobs import EXPORT
from app.security import policy
from app.security.scope import current_viewer
from app.services import audit, exports, runner
from app.services.errors import DomainError


def _view(name: str):
    for view in current_app.appbuilder.baseviews:
        if type(view).__name__ == name and hasattr(view, "export_plan"):
            return view
    raise DomainError("The list %(name)s no longer exists", name=repr(name)[:60])


@runner.handler(EXPORT)
def export_list(ctx: runner.RunContext) -> str:
    params = ctx.params
    fmt = exports.check_format(params.get("format"))
    user = db.session.get(CrmUser, params.get("user_id")) if params.get("user_id") else None
    if user is None or not user.is_active:
        raise DomainError("The user who asked for this export can no longer sign in")
    view = _view(str(params.get("view")))
    args = [*params.get("args", []), *([["_l_", params["locale"]]] if params.get("locale") else [])]
    with current_app.test_request_context("/", query_string=args,
                                          environ_base={"REMOTE_ADDR": params.get("ip") or ""}):
        g.user = user  # the data scope, masking and audit of the person who asked
        g.pop("_crm_viewer", None)
        if not current_viewer().can(policy.EXPORT, view.class_permission_name):
            raise DomainError("%(user)s may no longer export this list", user=user.username)
        plan = view.export_plan()
        position = ctx.position
        if position is None:
            ctx.checkpoint(db.session, total=exports.count(plan.query, plan.max_rows or None))
            db.session.commit()
        elif position.get("phase") == "done":  # ended by an execution that died before recording it
            return f"{position.get('rows', 0)} rows ({fmt})"

        def checkpoint(at: dict, done: int) -> bool:
            ctx.checkpoint(db.session, done=done, position=at)
            db.session.commit()
            return not ctx.cancelled(db.session)

        written = exports.write_file(plan, fmt, ctx.run_id, position, checkpoint)
        if written < 0:
            exports.remove_files(ctx.run_id)
            return f"Cancelled after {ctx.position.get('rows', 0) if ctx.position else 0} rows"
        summary, details = exports.audit_details(view.__class__.__name__, fmt, written, plan.full_phones,
                                                 _filters(params.get("args", [])), plan.columns, ctx.run_id)
        audit.record(db.session, "export", target_type=view.class_permission_name, target_id=ctx.run_id,
                     summary=summary, after=details)
        ctx.checkpoint(db.session, done=written, total=written, position={"phase": "done", "rows": written})
        db.session.commit()
    return f"{written} rows ({fmt})"


def _filters(args: list) -> dict:
    out: dict = {}
    for key, value in args:
        out.setdefault(key, []).append(value)
    return {k: v[0] if len(v) == 1 else v for k, v in out.items()}
