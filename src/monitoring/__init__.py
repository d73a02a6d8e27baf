"""Monitoring of the API: Prometheus metrics of its HTTP traffic and the queue, at `/metrics`."""
