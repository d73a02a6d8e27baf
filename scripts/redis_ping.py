"""`python -m scripts.redis_ping URL`: exit 0 if Redis answers at URL.

With `--local-port`, print the port if URL points at this machine (so a private Redis can be
started there) and exit 0; exit 1 otherwise.
"""

from __future__ import annotations

import sys
from urllib.parse import urlparse

import redis


def main(argv: list[str]) -> int:
    if argv[:1] == ["--local-port"]:
        url = urlparse(argv[1])
        if url.scheme in ("redis", "") and url.hostname in ("127.0.0.1", "localhost", "::1"):
            print(url.port or 6379)
            return 0
        return 1
    try:
        client = redis.Redis.from_url(argv[0], socket_connect_timeout=1, socket_timeout=1)
        client.ping()
        client.close()
    except (redis.RedisError, OSError):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
