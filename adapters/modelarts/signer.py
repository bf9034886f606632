"""Huawei Cloud AK/SK request signing (SDK-HMAC-SHA256), for the client and the simulator.

Written from the algorithm in VENDORS.md; tests compare it with huaweicloudsdkcore's signer.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from urllib.parse import quote, unquote

ALGORITHM = "SDK-HMAC-SHA256"
DATE_FORMAT = "%Y%m%dT%H%M%SZ"
CONTENT_HASH_HEADER = "X-Sdk-Content-Sha256"


def _enc(s: str) -> str:
    return quote(s, safe="~")


def canonical_uri(path: str) -> str:
    """Each path segment re-encoded with only `~` safe; always ends with '/'."""
    uri = "/".join(_enc(seg) for seg in unquote(path).split("/"))
    return uri if uri.endswith("/") else uri + "/"


def canonical_query(pairs: Iterable[tuple[str, str]]) -> str:
    """Sorted `k=v` pairs, both encoded with only `~` safe."""
    return "&".join(f"{_enc(k)}={_enc(v)}" for k, v in sorted((str(k), str(v)) for k, v in pairs))


def signed_header_names(headers: Mapping[str, str]) -> list[str]:
    """Lower-cased names of every header without '_' in its name, sorted."""
    return sorted({k.lower() for k in headers if "_" not in k})


def _payload_hash(headers: Mapping[str, str], body: bytes) -> str:
    for k, v in headers.items():
        if k.lower() == CONTENT_HASH_HEADER.lower():
            return v
    return hashlib.sha256(body).hexdigest()


def canonical_request(method: str, path: str, query: Iterable[tuple[str, str]], headers: Mapping[str, str],
                      signed: list[str], body: bytes) -> str:
    """METHOD, URI, QUERY, HEADERS, SIGNED and the body hash, one per line."""
    lower = {k.lower(): str(v).strip() for k, v in headers.items()}
    head = "".join(f"{name}:{lower.get(name, '')}\n" for name in signed)
    return "\n".join([method.upper(), canonical_uri(path), canonical_query(query), head, ";".join(signed),
                      _payload_hash(headers, body)])


def signature(sk: str, date: str, canonical: str) -> str:
    """Hex HMAC-SHA256 of the string to sign, keyed with the raw SK."""
    to_sign = f"{ALGORITHM}\n{date}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    return hmac.new(sk.encode(), to_sign.encode(), hashlib.sha256).hexdigest()


def sign(method: str, path: str, query: Iterable[tuple[str, str]], headers: dict[str, str], body: bytes,
         ak: str, sk: str, now: datetime | None = None) -> dict[str, str]:
    """Return `headers` plus X-Sdk-Date and Authorization. `headers` must already hold Host."""
    out = dict(headers)
    if not any(k.lower() == "x-sdk-date" for k in out):
        out["X-Sdk-Date"] = (now or datetime.now(UTC)).strftime(DATE_FORMAT)
    date = next(v for k, v in out.items() if k.lower() == "x-sdk-date")
    signed = signed_header_names(out)
    sig = signature(sk, date, canonical_request(method, path, list(query), out, signed, body))
    out["Authorization"] = f"{ALGORITHM} Access={ak}, SignedHeaders={';'.join(signed)}, Signature={sig}"
    return out


def parse_authorization(value: str) -> dict[str, str] | None:
    """Split `SDK-HMAC-SHA256 Access=…, SignedHeaders=…, Signature=…`; None if not that scheme."""
    if not value.startswith(ALGORITHM + " "):
        return None
    fields: dict[str, str] = {}
    for part in value[len(ALGORITHM) + 1:].split(","):
        k, sep, v = part.strip().partition("=")
        if sep:
            fields[k] = v
    if not {"Access", "SignedHeaders", "Signature"} <= set(fields):
        return None
    return fields


def verify(method: str, path: str, query: Iterable[tuple[str, str]], headers: Mapping[str, str], body: bytes,
           secret_for: Mapping[str, str], max_skew_seconds: float = 900,
           now: datetime | None = None) -> str | None:
    """None when the request is correctly signed by a known AK within the allowed skew, else why not."""
    auth = parse_authorization(headers.get("Authorization", ""))
    if auth is None:
        return "missing or malformed SDK-HMAC-SHA256 Authorization header"
    sk = secret_for.get(auth["Access"])
    if sk is None:
        return "unknown access key"
    date = headers.get("X-Sdk-Date", "")
    try:
        when = datetime.strptime(date, DATE_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return "missing or malformed X-Sdk-Date"
    if abs(((now or datetime.now(UTC)) - when).total_seconds()) > max_skew_seconds:
        return "X-Sdk-Date is more than 15 minutes off"
    signed = [h for h in auth["SignedHeaders"].split(";") if h]
    if "x-sdk-date" not in signed or "host" not in signed:
        return "X-Sdk-Date and Host must be signed"
    want = signature(sk, date, canonical_request(method, path, list(query), headers, signed, body))
    if not hmac.compare_digest(want, auth["Signature"]):
        return "signature does not match"
    return None
