"""Administration: outgoing webhook notifications (signed, SSRF-guarded, retried)."""
