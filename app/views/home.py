"""The landing page. Directors and managers land on the manager dashboard, salespeople on their workbench
(both shown right here, at "/"); everyone else, and the administrator (who reaches the dashboard from the
menu), sees who they are, what they may see, and the organisation at a glance."""

from __future__ import annotations

from flask import g
from flask_appbuilder import IndexView, expose
from sqlalchemy import func, select

from app.extensions import db
from app.models.employee import Employee
from app.models.org import OrgUnit
from app.security import policy
from app.security.scope import current_viewer, restrict


def _registered(appbuilder, name: str):
    return next((v for v in appbuilder.baseviews if type(v).__name__ == name), None)


def headcount(viewer) -> dict:
    """Employees and org units the viewer can see, by HR status and per unit."""
    by_status = dict(db.session.execute(
        restrict(select(Employee.hr_status, func.count()).group_by(Employee.hr_status), Employee, viewer)
    ).all())
    units = db.session.scalar(restrict(select(func.count(OrgUnit.id)), OrgUnit, viewer))
    per_unit = db.session.execute(
        restrict(select(OrgUnit.name, func.count(Employee.id))
                 .join(Employee.org_unit).group_by(OrgUnit.name)
                 .order_by(func.count(Employee.id).desc()).limit(20), Employee, viewer)
    ).all()
    return {"by_status": by_status, "units": units, "employees": sum(by_status.values()),
            "per_unit": [{"unit": name, "n": n} for name, n in per_unit]}


class HomeView(IndexView):
    index_template = "crm/index.html"

    @expose("/")
    def index(self):
        user = getattr(g, "user", None)
        if user is None or user.is_anonymous:
            return self.render_template(self.index_template, viewer=None, stats=None)
        viewer = current_viewer()
        can_people = viewer.can(policy.READ, policy.EMPLOYEE)  # counts are data too
        is_admin = ("*", "*") in viewer.permissions
        if not is_admin and viewer.can(policy.READ, policy.DASHBOARD):
            view = _registered(self.appbuilder, "DashboardView")
            if view is not None:
                return view.page(headcount=headcount(viewer) if can_people else None)
        if not is_admin and viewer.can(policy.READ, policy.WORKBENCH) and viewer.employee_id is not None:
            view = _registered(self.appbuilder, "WorkbenchView")
            if view is not None:
                return view.page(headcount=headcount(viewer) if can_people else None)
        if not can_people:
            return self.render_template(self.index_template, viewer=viewer, stats=None)
        return self.render_template(self.index_template, viewer=viewer, stats=headcount(viewer))
