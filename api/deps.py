"""Request dependencies as Annotated aliases."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated
from uuid import UUID

from fastapi import Depends, Request

from core.services import Services
from schemas.errors import NotFound
from schemas.rows import Project

if TYPE_CHECKING:
    from api.auth import Caller


async def get_services(request: Request) -> Services:
    """The process's services (opened by the app's lifespan).

    `async` though it awaits nothing: FastAPI runs a plain `def` dependency in a worker
    thread, a thread hop per request for one attribute read.
    """
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def visible_project(services: Services, caller: Caller, project_id: UUID) -> Project:
    """The project if the caller may see it; someone else's is NotFound, like an unknown one."""
    project = await services.store.get_project(project_id)
    if not caller.is_service and project.user_id != caller.user_id:
        raise NotFound(f"project {project_id} not found", field="project_id")
    return project
