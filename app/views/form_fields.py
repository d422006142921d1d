"""What the add and edit forms of every CrmModelView change in FAB's generated fields."""

from __future__ import annotations

from wtforms import BooleanField, validators
from wtforms.fields.core import UnboundField


def loosened(form_cls):
    """`form_cls` with its checkboxes optional. FAB makes the field of every NOT NULL column required, and
    an unchecked box sends nothing, so a required checkbox could never be saved unchecked (False).
    Optional dropdowns get a visible blank choice ("—"): with FAB's empty one, Select2 shows "__None"."""
    loosened = {}
    for name in dir(form_cls):
        unbound = getattr(form_cls, name, None)
        if not isinstance(unbound, UnboundField):
            continue
        changes = None
        if issubclass(unbound.field_class, BooleanField):
            required = validators.InputRequired | validators.DataRequired
            changes = {"validators": [v for v in unbound.kwargs.get("validators") or ()
                                      if not isinstance(v, required)]}
        elif unbound.kwargs.get("allow_blank") and not unbound.kwargs.get("blank_text"):
            changes = {"blank_text": "—"}
        if changes is not None:
            field = UnboundField(unbound.field_class, *unbound.args, **{**unbound.kwargs, **changes})
            field.creation_counter = unbound.creation_counter
            loosened[name] = field
    return type(form_cls.__name__, (form_cls,), loosened) if loosened else form_cls
