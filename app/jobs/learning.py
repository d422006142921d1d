"""RQ job handlers of the learning domain (runner kinds), registered with @runner.handler."""

from __future__ import annotations
