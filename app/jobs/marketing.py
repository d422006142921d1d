"""RQ job handlers of the marketing domain (runner kinds), registered with @runner.handler."""

from __future__ import annotations
