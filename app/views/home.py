"""The landing page: who you are, what you may see, and the organisation at a glance."""

from __future__ import annotations

from flask import g
from flask_appbuilder import IndexView, expose
from sqlalchemy import func, select

from app.extensions import db
from app.models.employee import Employee
from app.models.org import OrgUnit
from app.security import policy
from app.security.scope import current_viewer, restrict


class HomeView(IndexView):
    index_template = "crm/index.html"

    @expose("/")
    def index(self):
        user = getattr(g, "user", None)
        if user is None or user.is_anonymous:
            return self.render_template(self.index_template, viewer=None, stats=None)
        viewer = current_viewer()
        if not viewer.can(policy.READ, policy.EMPLOYEE):  # counts are data too
            return self.render_template(self.index_template, viewer=viewer, stats=None)
        by_status = dict(db.session.execute(
            restrict(select(Employee.hr_status, func.count()).group_by(Employee.hr_status), Employee, viewer)
        ).all())
        units = db.session.scalar(restrict(select(func.count(OrgUnit.id)), OrgUnit, viewer))
        per_unit = db.session.execute(
            restrict(select(OrgUnit.name, func.count(Employee.id))
                     .join(Employee.org_unit).group_by(OrgUnit.name)
                     .order_by(func.count(Employee.id).desc()).limit(20), Employee, viewer)
        ).all()
        stats = {"by_status": by_status, "units": units, "employees": sum(by_status.values()),
                 "per_unit": [{"unit": name, "n": n} for name, n in per_unit]}
        return self.render_template(self.index_template, viewer=viewer, stats=stats)
