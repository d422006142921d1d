"""Big Data › Segments (/segments/): the saved filters over customers and opportunities, the builder form
with its live count, and the REST API /api/v1/segments/ (list, get, create, update, delete, count).

Reading (the list, a segment, counting) is (can_read, Segment): everyone on the sales floor, who also
filter the customer and opportunity lists by a segment. Building (create, change, delete) is
(can_write, Segment): managers, directors and marketing. Every count is in the viewer's data scope (a
salesperson counts only their own customers). The rules are app.services.segments'.
"""

from __future__ import annotations

from flask import abort, flash, redirect, request, url_for
from flask_appbuilder import BaseView
from flask_appbuilder.api import BaseApi, protect, safe
from flask_appbuilder.api import expose as api_expose
from flask_appbuilder.security.decorators import has_access
from flask_appbuilder.views import expose
from flask_babel import lazy_gettext as _l
from sqlalchemy import select

from app import clock
from app.clock import utcnow
from app.extensions import db
from app.models.bigdata import CUSTOMER, Segment
from app.models.sales import STATUSES
from app.security import policy
from app.security.scope import current_viewer
from app.services import segments as seg
from app.services.errors import DomainError
from app.views import segments_form as sf
from app.views.uow import error_json, flash_error, run

CATEGORY = "Big Data"
FIELD_LABELS = {"name": _l("Name"), "description": _l("Description"), "subject": _l("Subject"),
                "criteria": _l("Criteria"), "tags_any": _l("Any of these tags"),
                "tags_all": _l("All of these tags"), "tags_none": _l("None of these tags"),
                "stages": _l("Stages"), "product_lines": _l("Product lines"), "campaigns": _l("Campaigns"),
                "statuses": _l("Statuses"), "regions": _l("Regions"), "lessons_min": _l("Lessons attended ≥"),
                "active_within_days": _l("Seen in class within (days)"),
                "contacted_within_days": _l("Contacted within (days)"),
                "not_contacted_days": _l("Not contacted for (days)"), "win_min": _l("Win probability from %"),
                "win_max": _l("Win probability to %"), "consent": _l("Marketing consent"),
                "sms_campaign.segment_id": _l("SMS campaign"),
                "dispatch_rule.match_segment_id": _l("Dispatch rule")}


def _author() -> str | None:
    from flask import g

    return getattr(getattr(g, "user", None), "username", None)


def can_build() -> bool:
    return current_viewer().can(policy.WRITE, policy.SEGMENT)


def segment_dict(segment: Segment, names: sf.Names | None = None, counts: bool = True) -> dict:
    """A segment as the API answers it (its last count only for builders: it was counted in its
    author's scope)."""
    criteria = seg.criteria_of(segment)
    names = names or sf.Names(db.session, [criteria])
    return {"id": segment.id, "name": segment.name, "description": segment.description,
            "subject": segment.subject, "criteria": criteria,
            "summary": sf.describe(criteria, segment.subject, names),
            "last_count": segment.last_count if counts else None,
            "counted_at": clock.isoformat(segment.counted_at) if counts else None,
            "created_by": segment.created_by}


def all_segments(subject: str | None = None) -> list[Segment]:
    query = select(Segment).order_by(Segment.name, Segment.id)
    if subject is not None:
        query = query.where(Segment.subject == subject)
    return list(db.session.scalars(query))


class SegmentView(BaseView):
    """The list of segments and the builder."""

    route_base = "/segments"
    default_view = "list"
    class_permission_name = policy.SEGMENT
    method_permission_name = {"list": "read", "add": "write", "edit": "write", "delete": "write"}

    @expose("/list/")
    @has_access
    def list(self):
        rows = all_segments()
        criteria = {s.id: seg.criteria_of(s) for s in rows}
        names = sf.Names(db.session, criteria.values())
        return self.render_template(
            "segments/list.html", title=_l("Customer segments"), rows=rows, can_build=can_build(),
            summary={s.id: sf.describe(criteria[s.id], s.subject, names) for s in rows},
            subject_labels=sf.SUBJECT_LABELS)

    def _form(self, segment: Segment | None, error: DomainError | None = None, status: int = 200):
        posted = request.method == "POST"
        values = sf.form_values(segment, sf.criteria_from_form(request.form) if posted else None)
        if posted:
            values.update(name=request.form.get("name", ""), description=request.form.get("description", ""),
                          subject=request.form.get("subject", CUSTOMER))
        else:
            values.update(name=segment.name if segment else "", description=segment.description or ""
                          if segment else "", subject=segment.subject if segment else CUSTOMER)
        errors = {}
        if error is not None:  # next to its control, else above the form
            errors[error.field if error.field in FIELD_LABELS else "_"] = error.message
        body = self.render_template(
            "segments/form.html", title=_l("Edit segment") if segment else _l("New segment"), segment=segment,
            values=values, choices=sf.choices(db.session), errors=errors, labels=FIELD_LABELS,
            count_url=url_for("SegmentApi.count"))
        return body, status

    def _save(self, segment: Segment | None):
        values = {"name": request.form.get("name"), "description": request.form.get("description"),
                  "subject": request.form.get("subject"), "criteria": sf.criteria_from_form(request.form)}
        saved, error = run(seg.save, db.session, segment.id if segment else None, values, _author(),
                           current_viewer(), utcnow())
        if error is not None:
            return self._form(segment, error, error.status)
        flash(str(_l("Segment saved: %(name)s", name=saved.name)), "success")
        return redirect(url_for("SegmentView.list"))

    @expose("/add/", methods=["GET", "POST"])
    @has_access
    def add(self):
        return self._save(None) if request.method == "POST" else self._form(None)

    @expose("/edit/<int:pk>", methods=["GET", "POST"])
    @has_access
    def edit(self, pk: int):
        segment = db.session.get(Segment, pk)
        if segment is None:
            abort(404)
        return self._save(segment) if request.method == "POST" else self._form(segment)

    @expose("/delete/<int:pk>", methods=["POST"])
    @has_access
    def delete(self, pk: int):
        outcome = run(seg.delete, db.session, pk)
        if outcome.error is not None:
            if outcome.error.status == 404:
                abort(404)
            flash_error(outcome.error, FIELD_LABELS)
        else:
            flash(str(_l("Segment deleted: %(name)s", name=outcome.result)), "success")
        return redirect(url_for("SegmentView.list"))


class SegmentApi(BaseApi):
    """/api/v1/segments/: saved filters (read: use them; write: build them); counts in the caller's scope."""

    resource_name = "segments"
    class_permission_name = policy.SEGMENT
    method_permission_name = {"get_list": "read", "get": "read", "count": "read", "count_one": "read",
                              "post": "write", "put": "write", "delete": "write"}
    allow_browser_login = True
    openapi_spec_tag = "Segments"

    @staticmethod
    def _body() -> dict:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise DomainError("The body must be a JSON object", field="body", status=400)
        return body

    def _answer(self, work, status: int = 200):
        outcome = run(work)
        if outcome.error is not None:
            return error_json(outcome.error)
        return self.response(status, **outcome.result)

    @api_expose("/", methods=["GET"])
    @protect()
    @safe
    def get_list(self):
        """The segments, by name, each with its criteria and their summary in words.
        ---
        get:
          responses:
            200:
              description: "{result: [segment], count: n}"
        """
        rows = all_segments()
        names = sf.Names(db.session, [seg.criteria_of(s) for s in rows])
        builder = can_build()
        return self.response(200, result=[segment_dict(s, names, builder) for s in rows], count=len(rows))

    @api_expose("/<int:pk>", methods=["GET"])
    @protect()
    @safe
    def get(self, pk: int):
        """One segment.
        ---
        get:
          parameters:
          - in: path
            name: pk
            required: true
            schema: {type: integer}
          responses:
            200:
              description: The segment
            404:
              description: No such segment
        """
        segment = db.session.get(Segment, pk)
        if segment is None:
            return self.response(404, message="No such segment", field="id")
        return self.response(200, result=segment_dict(segment, counts=can_build()))

    @api_expose("/", methods=["POST"])
    @protect()
    @safe
    def post(self):
        """Create a segment: {"name", "description", "subject": customer|opportunity, "criteria": {…}}.
        ---
        post:
          requestBody:
            required: true
            content:
              application/json:
                schema:
                  $ref: '#/components/schemas/SegmentBody'
          responses:
            201:
              description: The segment, counted in the caller's scope
            400:
              description: Not a JSON object
            409:
              description: The name is taken
            422:
              description: A bad field, named in "field"
        """
        return self._answer(lambda: {"result": segment_dict(seg.save(
            db.session, None, self._body(), _author(), current_viewer(), utcnow(), strict=True))}, 201)

    @api_expose("/<int:pk>", methods=["PUT"])
    @protect()
    @safe
    def put(self, pk: int):
        """Change a segment (the fields sent).
        ---
        put:
          parameters:
          - in: path
            name: pk
            required: true
            schema: {type: integer}
          requestBody:
            required: true
            content:
              application/json:
                schema:
                  $ref: '#/components/schemas/SegmentBody'
          responses:
            200:
              description: The segment, counted in the caller's scope
            404:
              description: No such segment
            409:
              description: The name is taken
            422:
              description: A bad field, named in "field"
        """
        return self._answer(lambda: {"result": segment_dict(seg.save(
            db.session, pk, self._body(), _author(), current_viewer(), utcnow(), strict=True))})

    @api_expose("/<int:pk>", methods=["DELETE"])
    @protect()
    @safe
    def delete(self, pk: int):
        """Delete a segment no SMS campaign or dispatch rule uses.
        ---
        delete:
          parameters:
          - in: path
            name: pk
            required: true
            schema: {type: integer}
          responses:
            200:
              description: Deleted
            404:
              description: No such segment
            409:
              description: In use; "field" names the column that refers to it
        """
        return self._answer(lambda: {"message": "deleted", "name": seg.delete(db.session, pk)})

    @api_expose("/count", methods=["POST"])
    @protect()
    @safe
    def count(self):
        """Count criteria in the caller's data scope (the builder's live count): {"subject", "criteria"}.
        ---
        post:
          requestBody:
            required: true
            content:
              application/json:
                schema:
                  $ref: '#/components/schemas/SegmentCount'
          responses:
            200:
              description: "{count: n, subject, label: \\"n customers\\"}"
            400:
              description: Not a JSON object
            422:
              description: A bad criterion, named in "field"
        """
        def work():
            body = self._body()
            subject = body.get("subject", CUSTOMER)
            n = seg.count_for(db.session, subject, body.get("criteria", {}), current_viewer(), utcnow(),
                              strict=True)
            return {"count": n, "subject": subject, "label": sf.count_label(n, subject)}

        outcome = run(work, commit=False)
        if outcome.error is not None:
            return error_json(outcome.error)
        return self.response(200, **outcome.result)

    @api_expose("/<int:pk>/count", methods=["POST"])
    @protect()
    @safe
    def count_one(self, pk: int):
        """Count a saved segment in the caller's scope (kept as its last count when the caller builds).
        ---
        post:
          parameters:
          - in: path
            name: pk
            required: true
            schema: {type: integer}
          requestBody:
            required: false
            description: Nothing (the segment's own criteria are counted)
            content:
              application/json:
                schema: {type: object}
          responses:
            200:
              description: "{count: n, label}"
            404:
              description: No such segment
        """
        def work():
            segment = db.session.get(Segment, pk)
            if segment is None:
                raise DomainError("No such segment", field="id", status=404)
            if can_build():
                n = seg.recount(db.session, segment, current_viewer(), utcnow())
            else:
                n = seg.count(db.session, segment.subject, seg.criteria_of(segment),
                              seg.scope_clauses(segment.subject, current_viewer()), utcnow())
            return {"count": n, "subject": segment.subject, "label": sf.count_label(n, segment.subject)}

        return self._answer(work)

    def add_apispec_components(self, api_spec):
        super().add_apispec_components(api_spec)
        for name, schema in SCHEMAS.items():
            if name not in api_spec.components.schemas:
                api_spec.components.schema(name, schema)


# null (or an empty list) means "not a criterion"
_IDS = {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
        "maxItems": seg.MAX_LIST, "nullable": True}
_TEXTS = {"type": "array", "items": {"type": "string", "maxLength": seg.REGION_MAX}, "maxItems": seg.MAX_LIST,
          "nullable": True}
CRITERIA_SCHEMA = {
    "type": "object", "additionalProperties": False,
    "properties": {
        **{k: _IDS for k in seg.ID_LISTS},
        "statuses": {**_TEXTS, "items": {"type": "string", "enum": list(STATUSES)}},
        "regions": _TEXTS,
        **{k: {"type": "integer", "minimum": low, "maximum": high, "nullable": True}
           for k, (low, high) in seg.NUMBERS.items()},
        "consent": {"type": "boolean", "nullable": True},
    },
}
SCHEMAS = {
    "SegmentBody": {"type": "object", "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": seg.NAME_MAX},
        "description": {"type": "string", "maxLength": seg.DESCRIPTION_MAX, "nullable": True},
        "subject": {"type": "string", "enum": ["customer", "opportunity"]},
        "criteria": CRITERIA_SCHEMA}},
    "SegmentCount": {"type": "object", "properties": {
        "subject": {"type": "string", "enum": ["customer", "opportunity"]}, "criteria": CRITERIA_SCHEMA}},
}


def register(appbuilder) -> None:
    """Add this module's views and APIs to `appbuilder`."""
    appbuilder.add_view(SegmentView, "Segments", icon="fa-filter", label=_l("Customer segments"),
                        category=CATEGORY, category_label=_l("Big Data"), category_icon="fa-database")
    appbuilder.add_api(SegmentApi)
