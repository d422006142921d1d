"""The REST API's marshmallow schemas, as FAB derives them from the models, made to say what they mean.

- Times: ISO 8601 with the business zone's offset (app/views/times.py), related objects' too.
- Whole numbers and flags: an integer column takes an integer, a boolean one true or false. marshmallow
  otherwise converts what it is given (`2.6e-42` → 0, `"7"` → 7, `0` → False), so a body the OpenAPI
  document calls invalid would be stored.
"""

from __future__ import annotations

from marshmallow import fields

from app.views.times import LocalModel2SchemaConverter


class Boolean(fields.Boolean):
    """true or false only. (Named as marshmallow's: FAB's `/_info` tells a field's type by its class name.)"""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


def _strict(field):
    if isinstance(field, fields.Integer):
        field.strict = True
    elif type(field) is fields.Boolean:
        field.__class__ = Boolean  # keeps every setting of the field FAB made
    return field


class CrmModel2SchemaConverter(LocalModel2SchemaConverter):
    def _column2field(self, datamodel, column, nested=True, parent_schema_name=None):
        return _strict(super()._column2field(datamodel, column, nested=nested,
                                             parent_schema_name=parent_schema_name))

    def _meta_schema_factory(self, columns, model, class_mixin, parent_schema_name=None):
        schema = super()._meta_schema_factory(columns, model, class_mixin, parent_schema_name)
        for field in schema._declared_fields.values():  # the class is new: ours to change
            _strict(field)
        return schema
