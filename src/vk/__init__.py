"""VK API client: settings, errors, a Redis-shared rate limiter and the async client."""
