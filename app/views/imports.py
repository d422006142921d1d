"""The bulk-import page of number and word lists (SMS blacklist, sensitive words, do-not-call): paste text
or upload a .txt / .csv file, run one service importer as a unit of work, show what it did. Also what
the two phone lists (SMS blacklist, do-not-call) share: their page and the JSON their import API reads."""

from __future__ import annotations

import csv

from flask import request, url_for
from flask_appbuilder import expose
from flask_appbuilder.security.decorators import has_access

from app.security import policy
from app.services import inputs
from app.services.errors import DomainError
from app.views.uow import run

MAX_IMPORT_BYTES = 2 * 1024 * 1024
ENCODINGS = ("utf-8-sig", "gb18030")  # what a spreadsheet in China saves text as
PHONES_MAX = 1000  # numbers per API call
PHONE_MAX = 32  # characters of one number as typed
REASON_MAX = 255  # the lists' reason column


def read_upload_or_text(field_text: str = "text", field_file: str = "file") -> str:
    """The uploaded file's text (UTF-8 or GBK, at most 2 MB), else the pasted text."""
    upload = request.files.get(field_file)
    if upload is None or not upload.filename:
        return request.form.get(field_text, "")
    data = upload.read(MAX_IMPORT_BYTES + 1)
    if len(data) > MAX_IMPORT_BYTES:
        raise DomainError("The file is larger than 2 MB", field="file")
    for encoding in ENCODINGS:
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise DomainError("The file is not UTF-8 or GBK text", field="file")


def import_page(view, importer, title, kind: str, back_endpoint: str, **extra):
    """GET: the form. POST: `importer(text)` on the upload or the pasted text, committed, and its result
    (or the refusal) on the same page."""
    outcome = run(lambda: import_text(importer, read_upload_or_text())) if request.method == "POST" else None
    return view.render_template(
        "sms/import.html", title=title, kind=kind, back=url_for(back_endpoint), **extra,
        result=outcome.result if outcome else None,
        error=outcome.error.message if outcome and outcome.error else None)


def import_summary(result) -> dict:
    """A phone-list import (app.services.phones.ListImport) as the API answers it."""
    return {"added": result.added, "existing": result.existing,
            "errors": [{"line": n, "message": m} for n, m in result.errors]}


def _posted_object() -> dict:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise DomainError('Send a JSON object: {"phones": [...]}', status=400)
    return data


def _phones(problems: dict, data: dict) -> list[str] | None:
    return inputs.strings(problems, "phones", data.get("phones"), limit=PHONE_MAX, items=PHONES_MAX)


def posted_phone_list() -> list[str]:
    """The numbers of a JSON {"phones": ["…"]}: refused (400 for a body that is no JSON object, else 422
    naming the field) unless `phones` is a list of at most PHONES_MAX non-empty strings of at most
    PHONE_MAX characters each."""
    problems: dict[str, str] = {}
    phones = _phones(problems, _posted_object())
    inputs.check(problems)
    return phones


def posted_phones(text_body: bool = False) -> tuple[str, str | None]:
    """The list (one number a line, for app.services.phones.import_phone_list) and the reason of a JSON
    {"phones": ["…"], "reason": "…"}, checked as `posted_phone_list` does (the reason: a string of at most
    REASON_MAX characters); with `text_body`, a body not declared JSON is the list itself."""
    if text_body and not request.is_json:
        text = request.get_data(as_text=True)
        if len(text) > MAX_IMPORT_BYTES:
            raise DomainError("The list is larger than 2 MB", field="body", status=413)
        if not text.strip():
            raise DomainError('Send the numbers: {"phones": [...]} or a text body, one a line',
                              field="phones")
        return text, None
    data = _posted_object()
    problems: dict[str, str] = {}
    phones = _phones(problems, data)
    reason = inputs.text(problems, "reason", data.get("reason"), REASON_MAX)
    inputs.check(problems)
    # each number quoted as one CSV field: a comma, quote or line break in it stays in it
    return "\n".join('"{}"'.format(p.replace('"', '""')) for p in phones), reason


def import_text(importer, text: str):
    """`importer(text)` with any line ending read as one, and the CSV reading's own refusal (a quoted
    field over the csv module's limit, say) a 422."""
    try:
        return importer(text.replace("\r\n", "\n").replace("\r", "\n"))
    except csv.Error as exc:
        raise DomainError("The list cannot be read: %(reason)s", field="phones", reason=str(exc)) from None


class PhoneListMixin:
    """The page of a phone list kept by hand and by bulk import (SMS blacklist, do-not-call list).

    A subclass names `import_title` and implements `import_phones(text, reason)`; numbers added in the
    form are recorded as "manual", then checked by the next class's `check_item`.
    """

    base_order = ("created_at", "desc")
    phone_columns = ("phone",)
    method_permission_name = {**policy.METHOD_PERMISSIONS, "bulk_import": "write"}
    list_template = "sms/list.html"
    list_links = [("bulk_import", "Import numbers", "fa-upload", "can_write")]
    import_title = None

    def import_phones(self, text: str, reason: str | None):
        raise NotImplementedError

    def import_page_extra(self) -> dict:
        """More for the import page's template."""
        return {}

    def check_item(self, item, creating):
        if creating:
            item.source = "manual"
        super().check_item(item, creating)

    @expose("/import/", methods=["GET", "POST"])
    @has_access
    def bulk_import(self):
        return import_page(self, lambda text: self.import_phones(text, request.form.get("reason") or None),
                           self.import_title, "phones", f"{type(self).__name__}.list",
                           **self.import_page_extra())
