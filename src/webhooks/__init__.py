"""Outgoing webhooks: signed, SSRF-guarded, retried (`send_notification`)."""
