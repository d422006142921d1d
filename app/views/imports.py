"""The bulk-import page of number and word lists (SMS blacklist, sensitive words, do-not-call): paste text
or upload a .txt / .csv file, run one service importer as a unit of work, show what it did. Also what
the two phone lists (SMS blacklist, do-not-call) share: their page and the JSON their import API reads."""

from __future__ import annotations

from flask import request, url_for
from flask_appbuilder import expose
from flask_appbuilder.security.decorators import has_access

from app.security import policy
from app.services.errors import DomainError
from app.views.uow import run

MAX_IMPORT_BYTES = 2 * 1024 * 1024
ENCODINGS = ("utf-8-sig", "gb18030")  # what a spreadsheet in China saves text as


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
    outcome = run(lambda: importer(read_upload_or_text())) if request.method == "POST" else None
    return view.render_template(
        "sms/import.html", title=title, kind=kind, back=url_for(back_endpoint), **extra,
        result=outcome.result if outcome else None,
        error=outcome.error.message if outcome and outcome.error else None)


def import_summary(result) -> dict:
    """A phone-list import (app.services.phones.ListImport) as the API answers it."""
    return {"added": result.added, "existing": result.existing,
            "errors": [{"line": n, "message": m} for n, m in result.errors]}


def posted_phones() -> tuple[str, str | None] | None:
    """The numbers (one a line) and reason of a JSON {"phones": ["…"], "reason": "…"}; None for another
    body."""
    data = request.get_json(silent=True)
    if not isinstance(data, dict) or not isinstance(data.get("phones"), list):
        return None
    reason = data.get("reason") if isinstance(data.get("reason"), str) else None
    return "\n".join(str(p).replace(",", " ") for p in data["phones"]), reason


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
