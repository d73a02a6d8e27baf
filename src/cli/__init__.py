"""`vkp`: a command-line client of the HTTP API (enqueue, follow, list, retry and abort jobs).

It speaks HTTP only (`VKP_URL`, `VKP_API_KEY` or `VKP_TOKEN`), so it works against any
deployment; it imports nothing from the service's other packages.
"""
