"""Provider callbacks: delivery receipts and inbound replies, one endpoint per channel.

POST /api/v1/sms/receipts/<channel_id> and POST /api/v1/sms/inbound/<channel_id>. No login and no JWT:
the provider authenticates by signing the request with the channel's callback secret (checked by the
channel's adapter). CSRF-exempt (an API) and rate-limited per client address (CRM_SMS_CALLBACK_LIMIT).
A refused request answers 4xx JSON ({"message", "field"} when a field is at fault) and is kept as an
SmsReceipt row with status "rejected", the reason and its body.
"""

from __future__ import annotations

from flask import current_app, request
from flask_appbuilder import expose
from flask_appbuilder.api import BaseApi, safe
from flask_appbuilder.utils.limit import Limit
from flask_limiter.util import get_remote_address

from app.extensions import db
from app.models.sms import SmsChannel
from app.services.sms import receipts
from app.services.sms.http import SignatureError
from app.services.sms.providers import ProviderError, ReceiptError, provider_for
from app.views.request_body import read_capped

DEFAULT_LIMIT = "600 per minute"
MAX_BODY = 1024 * 1024  # a batch of receipts is small; refuse anything bigger (chunked too)


def _limit() -> str:
    return current_app.config.get("CRM_SMS_CALLBACK_LIMIT", DEFAULT_LIMIT)


class SmsCallbackApi(BaseApi):
    resource_name = "sms"
    openapi_spec_tag = "SMS callbacks"
    limits = [Limit(_limit, key_func=get_remote_address, methods=("POST",))]
    # Text the database cannot store is refused here, not by the central guard (input_guards), so that
    # the refused body is kept like any other.
    text_checked_body = True

    def _handle(self, channel_id: int, kind: str):
        channel = db.session.get(SmsChannel, channel_id)
        if channel is None:
            return self.response(404, message="No such channel")
        body = read_capped(MAX_BODY)
        if body is None:
            receipts.record_rejected(db.session, channel.id, kind, "Body too large", b"")
            db.session.commit()
            return self.response(413, message="Body too large", field="body")
        try:
            adapter = provider_for(channel)
            if kind == receipts.RECEIPT:
                outcome = receipts.apply_receipts(db.session, channel.id,
                                                  adapter.parse_receipts(body, request.headers))
            else:
                outcome = receipts.record_inbound(db.session, channel.id,
                                                  adapter.parse_inbound(body, request.headers))
        except ReceiptError as exc:
            db.session.rollback()
            receipts.record_rejected(db.session, channel.id, kind, str(exc), body)
            db.session.commit()
            status = 401 if isinstance(exc, SignatureError) else 400
            return self.response(status, message=str(exc), **({"field": exc.field} if exc.field else {}))
        except ProviderError as exc:  # the channel is misconfigured (no credentials, unknown provider)
            db.session.rollback()
            receipts.record_rejected(db.session, channel.id, kind, str(exc), body)
            db.session.commit()
            return self.response(503, message=str(exc))
        db.session.commit()
        return self.response(200, **outcome.as_dict())

    @expose("/receipts/<int:channel_id>", methods=["POST"])
    @safe
    def receipts(self, channel_id: int):
        """Delivery receipts from the channel's provider, in a batch.
        ---
        post:
          parameters:
          - in: path
            name: channel_id
            required: true
            schema:
              type: integer
          responses:
            200:
              description: How many receipts moved a message, were stale or duplicate, or wait for a match
            400:
              description: The payload is not acceptable (kept as a rejected receipt)
            401:
              description: Bad or missing signature, or a stale timestamp
            404:
              description: No such channel
            413:
              description: The body is over 1 MB (kept as a rejected request)
        """
        return self._handle(channel_id, receipts.RECEIPT)

    @expose("/inbound/<int:channel_id>", methods=["POST"])
    @safe
    def inbound(self, channel_id: int):
        """Inbound replies (opt-out keywords put the number on the blacklist).
        ---
        post:
          parameters:
          - in: path
            name: channel_id
            required: true
            schema:
              type: integer
          responses:
            200:
              description: How many replies were received and how many opted out
            400:
              description: The payload is not acceptable (kept as a rejected request)
            401:
              description: Bad or missing signature, or a stale timestamp
            404:
              description: No such channel
            413:
              description: The body is over 1 MB (kept as a rejected request)
        """
        return self._handle(channel_id, receipts.INBOUND)
