"""Model mixins shared by every domain (timestamps, data-scope declaration)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import DateTime
from sqlalchemy.orm import Mapped, mapped_column

from app.clock import utcnow


class TimestampMixin:
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, nullable=False)
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime, default=utcnow, onupdate=utcnow, nullable=False
    )


class ScopedMixin:
    """Declares how a model's rows fall under a data scope (see app.security.scope).

    `__scope_owner__` names the column holding the owning employee's id, `__scope_org__` the column
    holding the org unit id the row belongs to. Either may be None when the model has no such notion;
    a model whose rows belong to another's declares `__scope_via__` instead.
    """

    __scope_owner__: str | None = None
    __scope_org__: str | None = None
    #: (local column, model name, column there): visible when a visible row of that model matches,
    #: e.g. a lead is visible when its opportunity is.
    __scope_via__: tuple[str, str, str] | None = None
    #: a column holding the employee who created the row: they keep seeing it, whatever their scope.
    __scope_creator__: str | None = None
