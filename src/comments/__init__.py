"""VK communities, posts and comments: storage, idempotent bulk upserts and queries."""
