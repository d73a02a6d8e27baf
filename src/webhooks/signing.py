"""HMAC signatures of webhook bodies.

Receivers check `X-Signature: sha256=<hex>` (HMAC-SHA256 of `<timestamp>.<body>`) and
`X-Signature-Timestamp` with `verify(...)`.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-Signature"
TIMESTAMP_HEADER = "X-Signature-Timestamp"
SIGNATURE_PREFIX = "sha256="


def sign(body: bytes, secret: str, timestamp: int) -> str:
    """Hex HMAC-SHA256 of `b"<timestamp>." + body` keyed with `secret`."""
    message = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_headers(body: bytes, secret: str, timestamp: int) -> dict[str, str]:
    """`X-Signature: sha256=<hex>` and `X-Signature-Timestamp` for `body`."""
    return {
        SIGNATURE_HEADER: SIGNATURE_PREFIX + sign(body, secret, timestamp),
        TIMESTAMP_HEADER: str(timestamp),
    }


def verify(
    body: bytes,
    secret: str,
    signature: str,
    timestamp: int | str,
    *,
    tolerance: float | None = 300,
    now: float | None = None,
) -> bool:
    """For receivers: does `signature` (`sha256=<hex>` or hex) sign `body` at `timestamp`?

    Compared in constant time; a timestamp further than `tolerance` seconds from `now` fails
    (replay protection; None accepts any age).
    """
    try:
        stamp = int(timestamp)
    except (TypeError, ValueError):
        return False
    current = time.time() if now is None else now
    if tolerance is not None and abs(current - stamp) > tolerance:
        return False
    provided = signature.strip().removeprefix(SIGNATURE_PREFIX).lower()
    expected = sign(body, secret, stamp)
    return hmac.compare_digest(expected.encode(), provided.encode("utf-8", "replace"))
