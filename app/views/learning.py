"""The learning system's signed import API, the administrators' file upload, and the learning panel of
the customer page. The rules are app.services.learning's; the import runs as a job run (app.jobs.learning).

POST /api/v1/learning/activities and GET /api/v1/learning/runs/<id>: no login; the learning system signs
each request with LEARNING_API_SECRET (HMAC-SHA256 over timestamp, nonce and the body's SHA-256, headers
X-Learning-Timestamp / -Nonce / -Signature, within CRM_SIGNATURE_WINDOW_SECONDS of our clock). No secret
configured: every request is refused (401).
"""

from __future__ import annotations

from flask import current_app, flash, g, redirect, request, url_for
from flask_appbuilder import BaseView, expose
from flask_appbuilder.api import BaseApi, safe
from flask_appbuilder.security.decorators import has_access
from flask_appbuilder.utils.limit import Limit
from flask_babel import lazy_gettext as _l
from flask_limiter.util import get_remote_address

from app.extensions import db
from app.security import policy
from app.services import learning, signing
from app.services.errors import DomainError
from app.views import panels
from app.views.request_body import read_capped
from app.views.signed_api import run_state, verified

HEADERS = signing.Headers("X-Learning-Key", "X-Learning-Timestamp", "X-Learning-Nonce",
                          "X-Learning-Signature")
MAX_BODY = 4 * 1024 * 1024  # 5,000 rows of a few hundred bytes each, with room to spare
TIMELINE_SIZE = 50


def _limit() -> str:
    return current_app.config["CRM_LEARNING_API_LIMIT"]


class LearningApi(BaseApi):
    resource_name = "learning"
    openapi_spec_tag = "Learning system"
    limits = [Limit(_limit, key_func=get_remote_address)]  # per client address, as the other signed APIs

    @expose("/activities", methods=["POST"])
    @safe
    def activities(self):
        """A batch of learning activity; applied by a job run (answer 202 with the run to poll).
        ---
        post:
          description: >-
            Signed by the learning system (see the headers). Body `{"activities": [...]}`, at most 5,000
            rows, each {id, user_id, course, lesson, attended, progress, occurred_at}. Rows are checked one
            by one by the job: bad rows and rows of unknown users are reported in the summary of the run with
            their line (1 = the first row); an activity id imported before is skipped.
          requestBody:
            required: true
            content:
              application/json:
                schema:
                  type: object
                  required: [activities]
                  properties:
                    activities:
                      type: array
                      minItems: 1
                      maxItems: 5000
                      items:
                        type: object
                        required: [id, user_id, course, occurred_at]
                        properties:
                          id: {type: string, maxLength: 100, description: the activity id}
                          user_id: {type: string, maxLength: 64, description: the registered user id}
                          course: {type: string, maxLength: 200}
                          lesson: {type: string, maxLength: 200, nullable: true}
                          attended: {type: boolean, nullable: true, description: null when not a class}
                          progress: {type: integer, minimum: 0, maximum: 100, nullable: true}
                          occurred_at:
                            description: ISO 8601 with an offset, or Unix seconds
                            oneOf: [{type: string, format: date-time}, {type: integer}]
          responses:
            202:
              description: Accepted; the job run applying it
              content:
                application/json:
                  schema:
                    type: object
                    properties:
                      run_id: {type: integer}
                      rows: {type: integer}
            400:
              description: The body is not a JSON object, or `activities` is missing, not a list or empty
            401:
              description: Bad or missing signature, stale timestamp, or no secret configured
            413:
              description: The body is over 4 MB, or more than 5,000 activities
        """
        body = read_capped(MAX_BODY)
        if body is None:
            return self.response(413, message="Body too large", field="body")
        data, refused = verified(HEADERS, "LEARNING_API_SECRET", body)
        if refused is not None:
            return self.response(refused[0], **refused[1])
        try:
            rows = learning.check_batch(data)
            job = learning.start_import(db.session, rows, source="api")
            db.session.commit()
        except DomainError as exc:
            db.session.rollback()
            return self.response(exc.status, **exc.as_dict())
        return self.response(202, run_id=job.id, rows=len(rows))

    @expose("/runs/<int:run_id>", methods=["GET"])
    @safe
    def run_status(self, run_id: int):
        """Where an import run stands (signed like the post: the body signed is empty).
        ---
        get:
          parameters:
          - in: path
            name: run_id
            required: true
            schema:
              type: integer
          responses:
            200:
              description: >-
                The status of the run and counts (done = imported or there already, failed = bad or
                unknown rows), its summary and the rows it refused
              content:
                application/json:
                  schema:
                    type: object
                    properties:
                      id: {type: integer}
                      status: {type: string, enum: [queued, running, completed, failed, cancelled]}
                      done: {type: integer}
                      failed: {type: integer}
                      total: {type: integer, nullable: true}
                      percent: {type: integer, nullable: true}
                      summary: {type: string, nullable: true}
                      problems: {type: array, items: {type: object}}
            401:
              description: Bad or missing signature, stale timestamp, or no secret configured
            404:
              description: No learning import run has this id
        """
        _, refused = verified(HEADERS, "LEARNING_API_SECRET", request.get_data(cache=False)[:1024 * 1024],
                              json_body=False)
        if refused is not None:
            return self.response(refused[0], **refused[1])
        state = run_state(run_id, learning.KIND, learning.Tally)
        if state is None:
            return self.response(404, message="No such learning import run")
        return self.response(200, **state)



# --- the administrators' upload -----------------------------------------------------------------------
class LearningImportView(BaseView):
    """Upload a .csv or .json file of learning activity: the same job as the API's."""

    route_base = "/learning"
    default_view = "upload"
    class_permission_name = policy.LEARNING_IMPORT  # not Learning: readers of the panel do not import
    base_permissions = ["can_import"]
    method_permission_name = {"upload": "import"}

    @expose("/import", methods=["GET", "POST"])
    @has_access
    def upload(self):
        error = None
        if request.method == "POST":
            upload = request.files.get("file")
            try:
                rows = learning.rows_from_file(upload.filename if upload else None,
                                               upload.read(learning.MAX_UPLOAD_BYTES + 1) if upload else None)
                job = learning.start_import(db.session, rows, source="upload",
                                            started_by=getattr(g.user, "id", None))
                db.session.commit()
            except DomainError as exc:
                db.session.rollback()
                error = exc.message
            else:
                flash(_l("Import started: %(n)s rows", n=len(rows)), "info")
                return redirect(url_for("JobsView.show", pk=job.id))
        return self.render_template("learning/import.html", error=error, fields=learning.FIELDS,
                                    max_rows=learning.MAX_ROWS)


# --- the customer page --------------------------------------------------------------------------------
def timeline_context(customer) -> dict:
    """The panel's data: the customer's summary and newest activities (the page checked the scope)."""
    return {"learning_summary": learning.summary_of(db.session, customer.id),
            "learning_activities": learning.timeline(db.session, customer.id, TIMELINE_SIZE)}


def register(appbuilder) -> None:
    """Views and APIs of this domain (called from app.views.register_views)."""
    appbuilder.add_api(LearningApi)
    appbuilder.add_view(LearningImportView, "Learning Import", icon="fa-graduation-cap",
                        label=_l("Learning Import"), category="Leads")
    panels.add(panels.CUSTOMER, "learning/_timeline_panel.html", timeline_context,
               permission=("can_read", policy.LEARNING))
