"""Data authorisation attached to FAB roles."""

from __future__ import annotations

from flask_appbuilder.models.sqla import Model
from flask_appbuilder.security.sqla.models import Role
from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, backref, mapped_column, relationship

# Narrowest first: a user holding several roles gets the widest of their scopes.
SCOPE_OWN = "own"
SCOPE_SUBORDINATES = "own_subordinates"
SCOPE_TEAM = "team"
SCOPE_SUBTREE = "org_subtree"
SCOPE_ALL = "all"
DATA_SCOPES = (SCOPE_OWN, SCOPE_SUBORDINATES, SCOPE_TEAM, SCOPE_SUBTREE, SCOPE_ALL)


class RoleDataScope(Model):
    __tablename__ = "role_data_scope"

    role_id: Mapped[int] = mapped_column(
        ForeignKey("ab_role.id", ondelete="CASCADE"), primary_key=True
    )
    scope: Mapped[str] = mapped_column(String(20), nullable=False, default=SCOPE_OWN)

    role = relationship(
        Role, backref=backref("data_scope", uselist=False, cascade="all, delete-orphan")
    )

    def __str__(self) -> str:
        return f"{self.role}: {self.scope}"
