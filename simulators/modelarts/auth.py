"""How the fake ModelArts checks an AK/SK-signed request (SDK-HMAC-SHA256, as VENDORS.md describes it).

Written apart from the gateway's signer on purpose: a fake that shared the client's code would accept
whatever mistake the client made. The SDK-driven fidelity tests send requests signed by the Huawei SDK.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from urllib.parse import quote, unquote

SCHEME = "SDK-HMAC-SHA256"
MAX_SKEW_SECONDS = 900


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _canonical(method: str, path: str, query: Iterable[tuple[str, str]], headers: Mapping[str, str],
               signed: list[str], body: bytes) -> str:
    segments = [quote(s, safe="~") for s in unquote(path).split("/")]
    uri = "/".join(segments)
    if not uri.endswith("/"):
        uri += "/"
    pairs = sorted((str(k), str(v)) for k, v in query)
    qs = "&".join(quote(k, safe="~") + "=" + quote(v, safe="~") for k, v in pairs)
    by_name = {k.lower(): str(v).strip() for k, v in headers.items()}
    head = "".join(f"{h}:{by_name.get(h, '')}\n" for h in signed)
    payload = by_name.get("x-sdk-content-sha256") or _sha256_hex(body)
    return f"{method.upper()}\n{uri}\n{qs}\n{head}\n{';'.join(signed)}\n{payload}"


def check_signature(method: str, path: str, query: Iterable[tuple[str, str]], headers: Mapping[str, str],
                    body: bytes, secret_for: Mapping[str, str], now: datetime | None = None) -> str | None:
    """None when a known AK signed the request within the allowed clock skew; otherwise why not."""
    value = headers.get("Authorization", "")
    if not value.startswith(SCHEME + " "):
        return "missing or malformed SDK-HMAC-SHA256 Authorization header"
    parts = dict(p.strip().split("=", 1) for p in value[len(SCHEME) + 1:].split(",") if "=" in p)
    if not {"Access", "SignedHeaders", "Signature"} <= parts.keys():
        return "missing or malformed SDK-HMAC-SHA256 Authorization header"
    sk = secret_for.get(parts["Access"])
    if sk is None:
        return "unknown access key"
    date = headers.get("X-Sdk-Date", "")
    try:
        when = datetime.strptime(date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return "missing or malformed X-Sdk-Date"
    if abs(((now or datetime.now(UTC)) - when).total_seconds()) > MAX_SKEW_SECONDS:
        return "X-Sdk-Date is more than 15 minutes off"
    signed = [h for h in parts["SignedHeaders"].split(";") if h]
    if "x-sdk-date" not in signed or "host" not in signed:
        return "X-Sdk-Date and Host must be signed"
    to_sign = f"{SCHEME}\n{date}\n{_sha256_hex(_canonical(method, path, query, headers, signed, body).encode())}"
    want = hmac.new(sk.encode(), to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(want, parts["Signature"]):
        return "signature does not match"
    return None
