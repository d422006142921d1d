"""The one exception domain rules raise; views turn it into a form error or an HTTP 4xx JSON body.

Its message is an English msgid with `%(name)s` placeholders filled from keyword arguments, e.g.
`DomainError("A %(state)s campaign cannot be launched", field="status", state=campaign.status)` —
never an f-string, so that `pybabel extract -k DomainError` finds it. Read inside a request (a form
error, a flash, a JSON body) it is in that request's language; elsewhere (jobs, logs) in English.
`field` and `status` are the form field and the HTTP status: placeholders take other names.
"""

from __future__ import annotations

from flask import has_request_context


class DomainError(Exception):
    def __init__(self, message: str, field: str | None = None, status: int = 422, **params):
        super().__init__(message)
        self.msgid = message
        self.params = params
        self.field = field
        self.status = status

    @property
    def message(self) -> str:
        if has_request_context():
            from flask_babel import gettext

            return gettext(self.msgid, **self.params)
        return self.msgid % self.params if self.params else self.msgid

    def __str__(self) -> str:
        return self.message

    def as_dict(self) -> dict:
        body = {"message": self.message}
        if self.field:
            body["field"] = self.field
        return body
