"""The one exception domain rules raise; views turn it into a form error or an HTTP 4xx JSON body."""

from __future__ import annotations


class DomainError(Exception):
    def __init__(self, message: str, field: str | None = None, status: int = 422):
        super().__init__(message)
        self.message = message
        self.field = field
        self.status = status

    def as_dict(self) -> dict:
        body = {"message": self.message}
        if self.field:
            body["field"] = self.field
        return body
