"""The tags' APIs.

The big-data system's signed import (no login; modelled on the learning system's API):
POST /api/v1/bigdata/tags (tag definitions and members), POST /api/v1/bigdata/events (behaviour events)
— each a TAG_IMPORT job run, answer 202 with the run to poll — and GET /api/v1/bigdata/runs/<id>. Signed
with BIGDATA_API_SECRET (HMAC-SHA256 over timestamp, nonce and the body's SHA-256, headers
X-BigData-Timestamp / -Nonce / -Signature, within CRM_SIGNATURE_WINDOW_SECONDS); no secret configured:
every call is refused (401). Rate limited per client address (CRM_BIGDATA_API_LIMIT).

For signed-in users: GET /api/v1/tag/ (definitions) and GET /api/v1/tag/of/<subject>/<id> (a row's tags)
need (can_read, Tag); POST /api/v1/tagging/<subject>/<id> {"tag_id"} and DELETE
/api/v1/tagging/<subject>/<id>/<tag_id> (manual tags; the row in the caller's scope, else 404) need
(can_write, Tagging). A browser session's writes need the CSRF token (app.security.csrf).
"""

from __future__ import annotations

from flask import current_app, request
from flask_appbuilder.api import BaseApi, expose, protect, safe
from flask_appbuilder.utils.limit import Limit
from flask_limiter.util import get_remote_address
from sqlalchemy import select

from app import clock
from app.extensions import db
from app.models.bigdata import SUBJECTS, Tag
from app.models.jobs import TAG_IMPORT
from app.security import policy
from app.security.scope import current_viewer
from app.services import inputs, signing, tag_import, tags
from app.services.errors import DomainError
from app.views.request_body import read_capped
from app.views.sales import current_actor
from app.views.signed_api import run_state, verified
from app.views.uow import error_json, json_result

HEADERS = signing.Headers("X-BigData-Key", "X-BigData-Timestamp", "X-BigData-Nonce", "X-BigData-Signature")
MAX_BODY = 4 * 1024 * 1024
MAX_LISTED = 1000  # tag definitions listed by GET /api/v1/tag/



def _limit() -> str:
    return current_app.config["CRM_BIGDATA_API_LIMIT"]



class BigDataApi(BaseApi):
    resource_name = "bigdata"
    openapi_spec_tag = "Big-data system"
    limits = [Limit(_limit, key_func=get_remote_address)]

    def _accept(self, check):
        body = read_capped(MAX_BODY)
        if body is None:
            return self.response(413, message="Body too large", field="body")
        data, refused = verified(HEADERS, "BIGDATA_API_SECRET", body)
        if refused is not None:
            return self.response(refused[0], **refused[1])
        try:
            batch, rows, definitions = check(data)
            job = tag_import.start_import(db.session, batch, rows, definitions, source="api")
            db.session.commit()
        except DomainError as exc:
            db.session.rollback()
            return self.response(exc.status, **exc.as_dict())
        return self.response(202, run_id=job.id, rows=len(rows), tags=len(definitions))

    @expose("/tags", methods=["POST"])
    @safe
    def post_tags(self):
        """Imported tags and their members; applied by a job run (answer 202 with the run to poll).
        ---
        post:
          description: >-
            Signed by the big-data system (see the headers). Body `{"tags": [...], "assignments": [...]}`
            (at least one of the two). A tag definition {code, name, subject, description} creates or
            renames a tag of source `import` (a code that a manual or rule tag has is refused for that
            line). An assignment {tag, customer_phone | customer_id | opportunity_id, action, id} adds
            (`add`, the default) or removes (`remove`) the tag on the customer or opportunity; a code not
            defined yet creates the tag (name = code, about what the row names). Rows are checked one by
            one by the job: bad rows and rows naming someone unknown are reported in the run with their
            list and line (1 = the first row of the list), the others are kept. Applying the same batch again
            changes nothing.
          requestBody:
            required: true
            content:
              application/json:
                schema:
                  type: object
                  properties:
                    tags:
                      type: array
                      maxItems: 500
                      items:
                        type: object
                        required: [code]
                        properties:
                          code: {type: string, maxLength: 64, pattern: "^[A-Za-z0-9][A-Za-z0-9_.-]*$"}
                          name: {type: string, maxLength: 64}
                          subject: {type: string, enum: [customer, opportunity]}
                          description: {type: string, maxLength: 255}
                    assignments:
                      type: array
                      maxItems: 5000
                      items:
                        type: object
                        required: [tag]
                        properties:
                          tag: {type: string, maxLength: 64, description: the code of the tag}
                          customer_phone: {type: string, maxLength: 32}
                          customer_id: {type: integer, minimum: 1}
                          opportunity_id: {type: integer, minimum: 1}
                          action: {type: string, enum: [add, remove], default: add}
                          id: {type: string, maxLength: 100, description: the id the sender gives the row}
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
                      tags: {type: integer}
            400:
              description: The body is not a JSON object, a list is not a list, or both are missing or empty
            401:
              description: Bad or missing signature, stale timestamp, or no secret configured
            413:
              description: The body is over 4 MB, or a list is too long
        """
        def check(data):
            definitions, rows = tag_import.check_tags_batch(data)
            return tag_import.TAGS, rows, definitions
        return self._accept(check)

    @expose("/events", methods=["POST"])
    @safe
    def post_events(self):
        """Behaviour events (page views …); stored by a job run (answer 202 with the run to poll).
        ---
        post:
          description: >-
            Signed by the big-data system. Body `{"events": [...]}`, at most 5,000, each {id,
            customer_phone | customer_id, kind (default page_view), detail (the address of the page),
            occurred_at}. An event id stored before is skipped; bad rows and unknown customers are
            reported with their line. The rule tags "viewed a page" read the page views.
          requestBody:
            required: true
            content:
              application/json:
                schema:
                  type: object
                  required: [events]
                  properties:
                    events:
                      type: array
                      minItems: 1
                      maxItems: 5000
                      items:
                        type: object
                        required: [id, occurred_at]
                        properties:
                          id: {type: string, maxLength: 100}
                          customer_phone: {type: string, maxLength: 32}
                          customer_id: {type: integer, minimum: 1}
                          kind: {type: string, maxLength: 24, default: page_view}
                          detail: {type: string, maxLength: 500}
                          occurred_at:
                            description: ISO 8601 with an offset, or Unix seconds
                            oneOf: [{type: string, format: date-time}, {type: integer}]
          responses:
            202:
              description: Accepted; the job run storing them
              content:
                application/json:
                  schema:
                    type: object
                    properties:
                      run_id: {type: integer}
                      rows: {type: integer}
            400:
              description: The body is not a JSON object, or `events` is missing, not a list or empty
            401:
              description: Bad or missing signature, stale timestamp, or no secret configured
            413:
              description: The body is over 4 MB, or more than 5,000 events
        """
        return self._accept(lambda data: (tag_import.EVENTS, tag_import.check_events_batch(data), []))

    @expose("/runs/<int:run_id>", methods=["GET"])
    @safe
    def run_status(self, run_id: int):
        """Where an import run stands (signed like the posts: the body signed is empty).
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
              description: The status of the run, its counts, summary and the rows it refused
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
              description: No tag import run has this id
        """
        _, refused = verified(HEADERS, "BIGDATA_API_SECRET", request.get_data(cache=False)[:1024 * 1024],
                              json_body=False)
        if refused is not None:
            return self.response(refused[0], **refused[1])
        state = run_state(run_id, TAG_IMPORT, tag_import.Tally, hidden=("kind", "last_error"))
        if state is None:
            return self.response(404, message="No such tag import run")
        return self.response(200, **state)


# --- signed-in users -----------------------------------------------------------------------------------
def _tag_json(tag: Tag) -> dict:
    return {"id": tag.id, "code": tag.code, "name": tag.name, "source": tag.source, "subject": tag.subject,
            "rule": tag.rule, "rule_in_words": tags.rule_in_words(tag) or None, "enabled": tag.enabled,
            "member_count": tag.member_count, "computed_at": clock.isoformat(tag.computed_at)}


def _subject(subject: str) -> str:
    if subject not in SUBJECTS:
        raise DomainError("customer or opportunity", field="subject", status=404)
    return subject


class TagApi(BaseApi):
    resource_name = "tag"
    openapi_spec_tag = "Tags"
    class_permission_name = policy.TAG
    method_permission_name = {"list_tags": "read", "of": "read"}
    allow_browser_login = True

    @expose("/", methods=["GET"])
    @protect()
    @safe
    def list_tags(self):
        """The tag definitions (manual, rule and imported), by code.
        ---
        get:
          responses:
            200:
              description: The tags, with their source, subject, rule in words, members and last computed
              content:
                application/json:
                  schema:
                    type: object
                    properties:
                      result: {type: array, items: {type: object}}
        """
        rows = db.session.scalars(select(Tag).order_by(Tag.code).limit(MAX_LISTED))
        return self.response(200, result=[_tag_json(t) for t in rows])

    @expose("/of/<subject>/<int:item_id>", methods=["GET"])
    @protect()
    @safe
    def of(self, subject: str, item_id: int):
        """The tags on a customer or opportunity in the data scope of the caller.
        ---
        get:
          parameters:
          - in: path
            name: subject
            required: true
            schema: {type: string, enum: [customer, opportunity]}
          - in: path
            name: item_id
            required: true
            schema: {type: integer}
          responses:
            200:
              description: Each tag with the source that put it there and when
            404:
              description: No such customer / opportunity in the data scope of the caller
        """
        try:
            item_id = tags.visible_item(db.session, current_viewer(), _subject(subject), item_id)
        except DomainError as exc:
            return error_json(exc)
        result = [{**_tag_json(m.tag), "source": m.source, "added_at": clock.isoformat(m.added_at),
                   "added_by": m.added_by if m.source == "manual" else None}
                  for m in tags.tags_of(db.session, subject, item_id)]
        return self.response(200, result=result)


class TaggingApi(BaseApi):
    resource_name = "tagging"
    openapi_spec_tag = "Tags"
    class_permission_name = policy.TAGGING
    method_permission_name = {"put_on": "write", "take_off": "write"}
    allow_browser_login = True

    @expose("/<subject>/<int:item_id>", methods=["POST"])
    @protect()
    @safe
    def put_on(self, subject: str, item_id: int):
        """Put a manual tag on a customer or opportunity: {"tag_id": n}.
        ---
        post:
          parameters:
          - in: path
            name: subject
            required: true
            schema: {type: string, enum: [customer, opportunity]}
          - in: path
            name: item_id
            required: true
            schema: {type: integer}
          requestBody:
            required: true
            content:
              application/json:
                schema:
                  type: object
                  required: [tag_id]
                  properties:
                    tag_id: {type: integer, minimum: 1}
          responses:
            200:
              description: "`changed`: false when the tag was on already"
            400:
              description: The body is not a JSON object
            404:
              description: No such customer / opportunity in the scope of the caller, or no such tag
            422:
              description: Not a manual tag of this kind of record, disabled, or `tag_id` missing (`field`)
        """
        def work():
            body = request.get_json(silent=True)
            if not isinstance(body, dict):
                raise DomainError("The body must be a JSON object", field="body", status=400)
            problems: dict = {}
            tag_id = inputs.ident(problems, "tag_id", body.get("tag_id"), required=True)
            inputs.check(problems)
            changed = tags.add_tag(db.session, current_viewer(), _subject(subject), item_id, tag_id,
                                   current_actor().name)
            return {"changed": changed}
        return json_result(work)

    @expose("/<subject>/<int:item_id>/<int:tag_id>", methods=["DELETE"])
    @protect()
    @safe
    def take_off(self, subject: str, item_id: int, tag_id: int):
        """Take a manual tag off a customer or opportunity.
        ---
        delete:
          parameters:
          - in: path
            name: subject
            required: true
            schema: {type: string, enum: [customer, opportunity]}
          - in: path
            name: item_id
            required: true
            schema: {type: integer}
          - in: path
            name: tag_id
            required: true
            schema: {type: integer}
          responses:
            200:
              description: "`changed`: false when the tag was not on"
            404:
              description: No such customer / opportunity in the scope of the caller, or no such tag
            422:
              description: Not a manual tag of this kind of record (`field`)
        """
        return json_result(lambda: {"changed": tags.remove_tag(
            db.session, current_viewer(), _subject(subject), item_id, tag_id, current_actor().name)})


def register(appbuilder) -> None:
    appbuilder.add_api(BigDataApi)
    appbuilder.add_api(TagApi)
    appbuilder.add_api(TaggingApi)
