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
LEASE_SECONDS = 30.0
SEND_TIMEOUT = 10.0
MAX_ENDPOINTS = 64  # endpoints sent to at once by one replica
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
        self.timeout = aiohttp.ClientTimeout(total=SEND_TIMEOUT)

    async def deliver(self, row: dict[str, Any]) -> float | None:
        """One attempt; None when delivered, else when to try this endpoint again (epoch seconds)."""
        body = json.dumps(row["payload"], sort_keys=True, separators=(",", ":")).encode()
        ts = str(int(time.time()))
        secret = self.secrets.get((row["tenant"], row["url"]))
        attempt = int(row["attempts"])
        if secret is None:  # the webhook was removed from the config: nothing to sign with
            later = time.time() + 3600
            await self.store.events.outbox_result(row["id"], self.owner, False, later, "webhook no longer configured")
            return later
        headers = {"Content-Type": "application/json", "X-TJG-Event-Id": row["event_id"],
                   "X-TJG-Event-Type": str(row["payload"].get("type") or "job.transition"), TIMESTAMP_HEADER: ts,
                   SIGNATURE_HEADER: sign_body(secret, ts, body), "X-TJG-Delivery-Attempt": str(attempt),
                   "X-TJG-Redelivery": "true" if attempt > 1 else "false"}
        try:
            # Redirects are not followed: a receiver's 307 would re-send the signed payload somewhere else. A
            # 3xx is a failed delivery like any other non-2xx (the status, and where it pointed, logged).
            async with self.session.post(row["url"], data=body, headers=headers, timeout=self.timeout,
                                         allow_redirects=False) as r:
                await r.read()
                ok = 200 <= r.status < 300
                error = None if ok else f"HTTP {r.status}" + (" (redirects are not followed)"
                                                              if 300 <= r.status < 400 else "")
        except (TimeoutError, aiohttp.ClientError) as err:
            ok, error = False, type(err).__name__
        if ok:
            await self.store.events.outbox_result(row["id"], self.owner, True)
            return None
        delay = min(300.0, 0.5 * 2.0 ** min(attempt, 10)) * random.uniform(0.5, 1.0)
        later = time.time() + delay
        await self.store.events.outbox_result(row["id"], self.owner, False, later, error)
        log.warning("webhook_delivery_failed", url=row["url"], event_id=row["event_id"], attempt=attempt,
                    error=error, retry_in=round(delay, 2))
        return later

    async def drain(self, url: str, rows: list[dict[str, Any]]) -> None:
        """Send one endpoint's claimed rows in order. A failure backs off this endpoint only (its later
        rows wait with it, so every job's events stay in order); rows not reached before the lease would
        run out are given back."""
        stop_at = time.time() + LEASE_SECONDS - SEND_TIMEOUT - 1
        for i, row in enumerate(rows):
            if time.time() > stop_at:
                await self.store.events.outbox_release([r["id"] for r in rows[i:]], self.owner)
                return
            later = await self.deliver(row)
            if later is not None:
                await self.store.events.outbox_release([r["id"] for r in rows[i + 1:]], self.owner)
                await self.store.events.outbox_defer(url, row["id"], later)
                return

    async def run(self) -> None:
        """Deliver until cancelled: one sender per endpoint, endpoints side by side, so a slow or dead
        receiver delays only its own deliveries."""
        senders: dict[str, asyncio.Task[None]] = {}
        try:
            while True:
                try:
                    senders = {u: t for u, t in senders.items() if not t.done()}
                    rows = []
                    if len(senders) < MAX_ENDPOINTS:
                        rows = await self.store.events.claim_outbox(self.owner, 200, LEASE_SECONDS, list(senders))
                    by_url: dict[str, list[dict[str, Any]]] = {}
                    for row in rows:
                        by_url.setdefault(row["url"], []).append(row)
                    for url, items in by_url.items():
                        senders[url] = asyncio.create_task(self.drain(url, items), name=f"webhook {url}")
                    if not rows:
                        await asyncio.sleep(0.2)
                except asyncio.CancelledError:
                    raise
                except Exception as err:
                    log.warning("webhook_loop_error", error=str(err))
                    await asyncio.sleep(1.0)
        finally:
            for t in senders.values():
                t.cancel()
            await asyncio.gather(*senders.values(), return_exceptions=True)
