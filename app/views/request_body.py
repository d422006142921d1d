"""Reading a request body under a size cap, chunked bodies included.

A `Content-Length` over the cap is refused unread. A chunked body has no length to check first: it is read
through a stream cut one byte past the cap (Flask's per-request `max_content_length`), so reading more than
the cap shows it is too large without reading it all.
"""

from __future__ import annotations

from flask import request
from werkzeug.exceptions import RequestEntityTooLarge


def read_capped(limit: int) -> bytes | None:
    """The request body, or None when it is longer than `limit` bytes."""
    if request.content_length is not None and request.content_length > limit:
        return None
    request.max_content_length = limit + 1
    try:
        body = request.get_data(cache=False)
    except RequestEntityTooLarge:
        return None
    return None if len(body) > limit else body
