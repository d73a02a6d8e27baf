"""`arq tests.worker_settings.WorkerSettings`: the app's worker with the test tasks added, built as
`src.arq.worker.WorkerSettings` is (settings from the environment, uvloop)."""

from __future__ import annotations

from src.arq.worker import settings_class
from tests.tasks import registry

WorkerSettings = settings_class(registry)
