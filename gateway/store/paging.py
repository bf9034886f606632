"""Opaque keyset page tokens for job lists."""

from __future__ import annotations

import base64
import json
import re

from gateway.core.errors import BadRequest

_ID = re.compile(r"[0-9a-z]{1,64}")  # what a job id can be (gateway.core.ids; imported jobs get such ids too)


def encode_token(last_id: str) -> str:
    """Opaque page token."""
    return base64.urlsafe_b64encode(json.dumps({"after": last_id}).encode()).decode().rstrip("=")


def decode_token(token: str) -> str:
    """Inverse of encode_token; a bad token is a 400 naming the parameter."""
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        after = data["after"]
        if not isinstance(after, str) or not _ID.fullmatch(after):  # (a NUL or 5,000 chars went to the database)
            raise TypeError
        return after
    except (ValueError, KeyError, TypeError) as err:
        raise BadRequest("page_token is not a token this gateway issued",
                         errors=[{"loc": ["query", "page_token"], "msg": "invalid page token"}]) from err
