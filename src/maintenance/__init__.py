"""Maintenance: community statistics, removal of old data, database backups, and their schedules."""
