"""`arq tests.worker_settings.WorkerSettings`: the app's worker with the test tasks added."""

from __future__ import annotations

from src.arq.config import ArqSettings
from src.arq.worker import worker_options
from src.config import Settings, load
from tests.tasks import registry

WorkerSettings = type(
    "WorkerSettings",
    (),
    worker_options(registry=registry, settings=load(Settings), arq_settings=load(ArqSettings)),
)
