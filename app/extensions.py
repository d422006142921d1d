"""The application's singletons, created unbound and initialised by `create_app` in order."""

from __future__ import annotations

from flask_appbuilder import AppBuilder
from flask_appbuilder.models.sqla.base import SQLA
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_migrate import Migrate
from flask_wtf.csrf import CSRFProtect

from app.queues import RedisQueues

db = SQLA()
csrf = CSRFProtect()
migrate = Migrate()
# FAB's security manager adopts this limiter (see CrmSecurityManager.create_limiter).
limiter = Limiter(key_func=get_remote_address)
appbuilder = AppBuilder(update_perms=False)
rq = RedisQueues()
