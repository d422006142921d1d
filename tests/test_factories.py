"""Every model in app.models has a factory (tests/factories.py) that makes a valid row by itself, in an
install without demo data: a new model without one fails here, not in the first test that needs it."""

from __future__ import annotations

import importlib
import pkgutil

from flask_appbuilder.models.sqla import Model
from sqlalchemy import func, inspect, select, text

import app.models
from tests import factories, installs

production_db, production_app = installs.production_db, installs.production_app
production_session = installs.production_session


def app_models() -> list[type]:
    """Every mapped class defined in a module of app.models (imported here, so none is missed)."""
    for info in pkgutil.iter_modules(app.models.__path__):
        importlib.import_module(f"{app.models.__name__}.{info.name}")
    found = {m.class_ for m in Model.registry.mappers if m.class_.__module__.startswith("app.models")}
    return sorted(found, key=lambda cls: cls.__name__)


def test_every_model_has_a_factory():
    missing = [cls.__name__ for cls in app_models() if cls not in factories.FACTORIES]
    assert not missing, f"add a ModelFactory to tests/factories.py for: {', '.join(missing)}"


def test_each_factory_makes_a_valid_row_on_its_own(production_session):
    session = production_session
    for model in app_models():
        before = session.scalar(select(func.count()).select_from(model))
        row = factories.FACTORIES[model].create(session)
        identity = inspect(row).identity
        session.expire_all()
        assert session.get(model, identity) is not None, model.__name__
        assert session.scalar(select(func.count()).select_from(model)) == before + 1, model.__name__
    # SQLite does not enforce foreign keys as rows are written: every reference must still lead somewhere.
    assert session.execute(text("PRAGMA foreign_key_check")).all() == []


def test_factories_take_a_relationship_instead_of_its_column(production_session):
    session = production_session
    unit = factories.ORG_UNIT.create(session, kind="department")
    units = session.scalar(select(func.count()).select_from(app.models.OrgUnit))
    emp = factories.EMPLOYEE.create(session, org_unit=unit)
    assert emp.org_unit_id == unit.id
    assert session.scalar(select(func.count()).select_from(app.models.OrgUnit)) == units  # none made
