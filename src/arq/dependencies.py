"""FastAPI dependencies of the job module."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from src.arq.service import ArqService


def get_arq_service(request: Request) -> ArqService:
    service: ArqService = request.app.state.arq_service
    return service


ArqServiceDep = Annotated[ArqService, Depends(get_arq_service)]
