"""Comment reports: made by a job (JSON, CSV, HTML), stored whole, downloaded by their owner."""
