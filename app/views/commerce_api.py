"""POST /api/v1/shop/webhook — the shop reports orders, payments, refunds and cancellations.

No login and no JWT: the shop signs each request with SHOP_WEBHOOK_SECRET (app.services.signing,
headers X-Shop-Timestamp, X-Shop-Nonce, X-Shop-Signature; none set: every call is refused). CSRF-exempt
for a caller without a session (an API; app.security.csrf), rate-limited per client address
(CRM_SHOP_WEBHOOK_LIMIT), the body capped at 256 KB. A signed request refused for its body is kept as a
rejected ShopEvent; an unsigned one is not kept (anyone could fill the table).
"""

from __future__ import annotations

import logging

from flask import current_app, request
from flask_appbuilder import expose
from flask_appbuilder.api import BaseApi, safe
from flask_appbuilder.utils.limit import Limit
from flask_limiter.util import get_remote_address
from sqlalchemy.exc import IntegrityError

from app.clock import utcnow
from app.extensions import db
from app.services import shop_events, signing
from app.views import uow
from app.views.request_body import read_capped

log = logging.getLogger(__name__)

DEFAULT_LIMIT = "600 per minute"
MAX_BODY = 256 * 1024


def _limit() -> str:
    return current_app.config.get("CRM_SHOP_WEBHOOK_LIMIT", DEFAULT_LIMIT)


def queue_texts(message_ids) -> None:
    """Queue the order-paid texts made by a committed change (a failed enqueue is picked up by the
    notification reconciler)."""
    if not message_ids:
        return
    from app.jobs.sms_notifications import enqueue_notification

    for message_id in message_ids:
        try:
            enqueue_notification(message_id)
        except Exception:  # Redis down: the message stays pending for the reconciler
            log.exception("could not queue the order-paid text %s", message_id)


class ShopWebhookApi(BaseApi):
    resource_name = "shop"
    openapi_spec_tag = "Shop webhook"
    limits = [Limit(_limit, key_func=get_remote_address, methods=("POST",))]

    def _rejected(self, data, body: bytes, status: int, message: str, field: str | None):
        db.session.rollback()
        shop_events.reject(db.session, data, body, f"{field}: {message}" if field else message, utcnow())
        db.session.commit()
        return self.response(status, message=message, **({"field": field} if field else {}))

    @expose("/webhook", methods=["POST"])
    @safe
    def webhook(self):
        """An order event from the shop: a full snapshot of the order, signed.
        ---
        post:
          description: >-
            Signed with HMAC-SHA256 in hex over `timestamp + "\\n" + nonce + "\\n" + sha256hex(body)`
            with the shared secret (SHOP_WEBHOOK_SECRET); the timestamp (Unix seconds) must be within
            CRM_SIGNATURE_WINDOW_SECONDS of the CRM clock. Idempotent by `event_id`; events may come
            late, twice or out of order.
          requestBody:
            required: true
            content:
              application/json:
                schema:
                  type: object
                  required: [event_id, type, order]
                  properties:
                    event_id: {type: string, maxLength: 100}
                    type: {type: string, enum: [order.created, order.paid, order.refunded, order.cancelled]}
                    occurred_at: {type: string, description: ISO 8601 or Unix seconds}
                    order:
                      type: object
                      required: [number, items]
                      properties:
                        number: {type: string, maxLength: 64}
                        opportunity_id: {type: integer}
                        customer:
                          type: object
                          properties:
                            phone: {type: string}
                            registered_user_id: {type: string}
                            name: {type: string}
                        items:
                          type: array
                          items:
                            type: object
                            required: [sku, quantity, list_price, final_price]
                            properties:
                              sku: {type: string}
                              quantity: {type: integer, minimum: 1, maximum: 99}
                              list_price: {type: number}
                              final_price: {type: number}
                        list_total: {type: number}
                        final_total: {type: number}
                        paid_at: {type: string}
                        refunded_at: {type: string}
          responses:
            200:
              description: >-
                outcome "applied" (the order was recorded or moved), "duplicate" (this event_id was
                received before: nothing changed) or "ignored" (nothing to change: the order is past it)
              content:
                application/json:
                  schema:
                    type: object
                    properties:
                      outcome: {type: string, enum: [applied, duplicate, ignored]}
                      detail: {type: string}
                      order: {type: string}
                      status: {type: string}
                      approval: {type: string}
            400:
              description: The body is not acceptable ({"message", "field"}; kept as a rejected event)
            401:
              description: No secret configured, a bad or missing signature header, or a stale timestamp
            404:
              description: Not found
            409:
              description: The order's state forbids the move at this moment (retry later)
            413:
              description: The body is over 256 KB (kept as a rejected event)
            422:
              description: An unknown SKU or opportunity, or totals that do not add up (kept as rejected)
        """
        body = read_capped(MAX_BODY)
        if body is None:
            return self._rejected(None, b"", 413, "Body too large", "body")
        config = current_app.config
        try:
            window = int(config.get("CRM_SIGNATURE_WINDOW_SECONDS", 300))
            data = signing.verify_callback(shop_events.HEADERS, config.get("SHOP_WEBHOOK_SECRET"), body,
                                           request.headers, window)
        except signing.BadSignature as exc:
            return self.response(401, message=str(exc), **({"field": exc.field} if exc.field else {}))
        except signing.BadBody as exc:
            return self._rejected(None, body, 400, str(exc), "body")
        try:
            outcome = uow.run(shop_events.receive, db.session, data, body, utcnow())
        except IntegrityError:  # the same event id posted concurrently: the other post applied it
            db.session.rollback()
            if not shop_events.seen(db.session, data.get("event_id")):
                raise
            return self.response(200, outcome=shop_events.DUPLICATE, detail="event seen before")
        if outcome.error is not None:
            exc = outcome.error
            status = exc.status if 400 <= exc.status < 500 else 422
            return self._rejected(data, body, status, exc.message, exc.field)
        queue_texts(outcome.result.sms_message_ids)
        return self.response(200, **outcome.result.as_dict())
