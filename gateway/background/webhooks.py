"""Webhook delivery from the transactional outbox: at least once, signed, with backoff.

Each transition's deliveries are written in the same transaction as the transition; this loop
sends them. A delivery that may have been sent before (a retry, or a replica that died after
sending) carries X-TJG-Redelivery: true and the same X-TJG-Event-Id.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random
import time
from typing import Any

import aiohttp
import structlog

from gateway.core.config import Config
from gateway.store import Store

log = structlog.get_logger(__name__)

SIGNATURE_HEADER = "X-TJG-Signature"
TIMESTAMP_HEADER = "X-TJG-Timestamp"


def sign_body(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={mac}"


def verify_signature(secret: str, timestamp: str, body: bytes, signature: str, max_age: float = 300) -> bool:
    """For receivers: a valid signature on a fresh timestamp."""
    try:
        fresh = abs(time.time() - float(timestamp)) <= max_age
    except ValueError:
        return False
    return fresh and hmac.compare_digest(sign_body(secret, timestamp, body), signature)


def targets(config: Config) -> Any:
    """tenant -> webhook URLs, for the store's outbox writes."""
    by_tenant = {t.name: [w.url for w in t.webhooks] for t in config.tenants}
    return lambda tenant: by_tenant.get(tenant or "", [])


class WebhookDeliverer:
    """Sends due outbox rows; several replicas may run it side by side (rows are leased)."""

    def __init__(self, store: Store, config: Config, session: aiohttp.ClientSession, owner: str) -> None:
        self.store = store
        self.session = session
        self.owner = owner
        self.secrets = {(t.name, w.url): w.secret.get_secret_value() for t in config.tenants for w in t.webhooks}
        self.timeout = aiohttp.ClientTimeout(total=10)

    async def deliver(self, row: dict[str, Any]) -> None:
        """One attempt."""
        body = json.dumps(row["payload"], sort_keys=True, separators=(",", ":")).encode()
        ts = str(int(time.time()))
        secret = self.secrets.get((row["tenant"], row["url"]))
        attempt = int(row["attempts"])
        if secret is None:  # the webhook was removed from the config: nothing to sign with
            await self.store.events.outbox_result(row["id"], self.owner, False, time.time() + 3600,
                                           "webhook no longer configured")
            return
        headers = {"Content-Type": "application/json", "X-TJG-Event-Id": row["event_id"],
                   "X-TJG-Event-Type": str(row["payload"].get("type") or "job.transition"), TIMESTAMP_HEADER: ts,
                   SIGNATURE_HEADER: sign_body(secret, ts, body), "X-TJG-Delivery-Attempt": str(attempt),
                   "X-TJG-Redelivery": "true" if attempt > 1 else "false"}
        try:
            async with self.session.post(row["url"], data=body, headers=headers, timeout=self.timeout) as r:
                await r.read()
                ok = 200 <= r.status < 300
                error = None if ok else f"HTTP {r.status}"
        except (TimeoutError, aiohttp.ClientError) as err:
            ok, error = False, type(err).__name__
        if ok:
            await self.store.events.outbox_result(row["id"], self.owner, True)
            return
        delay = min(300.0, 0.5 * 2 ** min(attempt, 10)) * random.uniform(0.5, 1.0)
        await self.store.events.outbox_result(row["id"], self.owner, False, time.time() + delay, error)
        log.warning("webhook_delivery_failed", url=row["url"], event_id=row["event_id"], attempt=attempt,
                    error=error, retry_in=round(delay, 2))

    async def run(self) -> None:
        """Deliver until cancelled."""
        while True:
            try:
                rows = await self.store.events.claim_outbox(self.owner)
                for row in rows:
                    await self.deliver(row)
                if not rows:
                    await asyncio.sleep(0.2)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.warning("webhook_loop_error", error=str(err))
                await asyncio.sleep(1.0)
