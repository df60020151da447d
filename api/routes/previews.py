"""Preview sessions (seed 003's orchestrator API) and the project files previews sync from.

- `POST /sessions/start {projectId}` → `{sessionId, containerUrl, status}`
- `POST /sessions/stop {sessionId}` → `{status: "ok"}` (also for a session already ended)
- `GET /sessions/{sessionId}/status` → `{sessionId, status, containerUrl, containerId}`
- `GET /projects/{projectId}/files` → every file, plus the event-log cursor to follow from
- `POST /projects/{projectId}/files {filePath, content}` → store the file and publish a
  `file:update` (event log; Supabase Realtime broadcast in production)

Every route authenticates (CallerDep); a user reaches only their own projects' sessions and
files — anyone else's answer 404, exactly like unknown ids.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, FastAPI, Request
from pydantic import ConfigDict, Field, field_validator

from api.auth import Caller, CallerDep
from api.deps import ServicesDep
from api.errors import error_responses
from previews.container.entrypoint import UnsafePath, safe_relative_path
from previews.ports import ProjectFileStore
from previews.realtime import broadcast_file_update
from previews.sessions import PreviewSessions
from previews.wiring import open_previews
from schemas.base import Model
from schemas.errors import NotFound, ValidationFailed
from schemas.events import EventType
from schemas.status import PreviewStatus

#: Largest file a client may push (characters); request bodies are capped separately.
MAX_FILE_CHARS = 1_000_000


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Close the preview service (its probe client and driver) when the app stops."""
    yield
    previews: PreviewSessions | None = getattr(app.state, "previews", None)
    if previews is not None:
        app.state.previews = None
        await previews.close()


router = APIRouter(tags=["previews"], lifespan=_lifespan)


async def get_previews(request: Request, services: ServicesDep) -> PreviewSessions:
    """The process's preview service, built on first use.

    A local container reaches the API at the address this request came in on.
    """
    previews: PreviewSessions | None = getattr(request.app.state, "previews", None)
    if previews is None:
        previews = open_previews(services, api_url=str(request.base_url).rstrip("/"))
        request.app.state.previews = previews
    return previews


PreviewsDep = Annotated[PreviewSessions, Depends(get_previews)]


class _Camel(Model):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")


class StartRequest(_Camel):
    """Start (or reuse) a project's preview."""

    project_id: UUID = Field(alias="projectId")
    """The project to preview."""


class StartResponse(_Camel):
    """The session serving the preview."""

    session_id: UUID = Field(alias="sessionId")
    """Poll `/sessions/{sessionId}/status` with it; stop it when the editor closes."""
    container_url: str | None = Field(alias="containerUrl")
    """The URL to load in the preview iframe (None while a concurrent start still boots)."""
    status: PreviewStatus
    """`active`, or `creating` when another start of the same project is still booting."""


class StopRequest(_Camel):
    """End a preview session."""

    session_id: UUID = Field(alias="sessionId")
    """The session to end."""


class StopResponse(_Camel):
    """Stopping succeeded (or the session had already ended)."""

    status: str = "ok"
    """Always `ok`."""


class StatusResponse(_Camel):
    """A session as it is now."""

    session_id: UUID = Field(alias="sessionId")
    """The session."""
    status: PreviewStatus
    """creating, active, ended or error."""
    container_url: str | None = Field(alias="containerUrl")
    """The preview's URL, once its machine exists."""
    container_id: str | None = Field(alias="containerId")
    """The machine id (a Fly machine id, or `local-…`)."""
    error_message: str | None = Field(default=None, alias="errorMessage")
    """Why the session failed or ended early."""
    expires_at: datetime | None = Field(default=None, alias="expiresAt")
    """When cleanup will end it unless it is started again."""


class FileBody(_Camel):
    """One file pushed by an editor or an agent."""

    file_path: str = Field(alias="filePath", min_length=1, max_length=1024)
    """Relative POSIX path inside the project (`src/App.tsx`); `..` and absolute paths are
    refused."""
    content: str = Field(max_length=MAX_FILE_CHARS)
    """The file's full new text."""

    @field_validator("file_path")
    @classmethod
    def _inside_project(cls, value: str) -> str:
        try:
            return safe_relative_path(value)
        except UnsafePath as err:
            raise ValueError(str(err)) from None

    @field_validator("content")
    @classmethod
    def _storable(cls, value: str) -> str:
        # PostgreSQL text cannot hold NUL: refuse it here rather than fail in the store.
        if "\x00" in value:
            raise ValueError("content must not contain NUL characters")
        return value


class FileOut(_Camel):
    """A stored file."""

    path: str
    """Relative path inside the project."""
    content: str
    """Its text."""
    updated_at: datetime = Field(alias="updatedAt")
    """When it last changed."""


class FilesResponse(_Camel):
    """Every file of a project and where in the event log the listing stands."""

    files: list[FileOut]
    """The files, by path."""
    cursor: str
    """Follow `/projects/{id}/stream` from here (Last-Event-ID) to miss no later change."""


class FileWritten(_Camel):
    """A stored and published file update."""

    file_path: str = Field(alias="filePath")
    """The normalised path."""
    updated_at: datetime = Field(alias="updatedAt")
    """When it was stored."""
    broadcast: bool
    """Whether Supabase Realtime accepted the broadcast (False locally)."""


@router.post(
    "/sessions/start",
    response_model=StartResponse,
    response_model_by_alias=True,
    responses=error_responses(404, 413),
)
async def start_session(
    body: StartRequest, caller: CallerDep, previews: PreviewsDep
) -> StartResponse:
    """Start the project's preview, or return its live one (idempotent per project)."""
    session = await previews.start(body.project_id, caller)
    return StartResponse(
        session_id=session.id, container_url=session.container_url, status=session.status
    )


@router.post("/sessions/stop", response_model=StopResponse, responses=error_responses(404, 413))
async def stop_session(body: StopRequest, caller: CallerDep, previews: PreviewsDep) -> StopResponse:
    """End the session and destroy its machine; an ended session is left unchanged."""
    await previews.stop(body.session_id, caller)
    return StopResponse()


@router.get(
    "/sessions/{session_id}/status", response_model=StatusResponse, responses=error_responses(404)
)
async def session_status(
    session_id: UUID, caller: CallerDep, previews: PreviewsDep
) -> StatusResponse:
    """The session's status and container."""
    session = await previews.status(session_id, caller)
    return StatusResponse(
        session_id=session.id,
        status=session.status,
        container_url=session.container_url,
        container_id=session.container_id,
        error_message=session.error_message,
        expires_at=session.expires_at,
    )


def _files(previews: PreviewSessions) -> ProjectFileStore:
    if previews.files is None:
        raise ValidationFailed("this deployment has no project file store", field="project_id")
    return previews.files


async def _own_project(services: ServicesDep, caller: Caller, project_id: UUID) -> None:
    project = await services.store.get_project(project_id)
    if not caller.is_service and project.user_id != caller.user_id:
        raise NotFound(f"project {project_id} not found", field="project_id")


@router.get(
    "/projects/{project_id}/files", response_model=FilesResponse, responses=error_responses(404)
)
async def list_files(
    project_id: UUID, caller: CallerDep, services: ServicesDep, previews: PreviewsDep
) -> FilesResponse:
    """Every file of the project, and the log cursor the listing corresponds to."""
    await _own_project(services, caller, project_id)
    files_store = _files(previews)
    # The cursor first: any change after it is replayed to the follower, none is lost.
    cursor = await files_store.log_position(project_id)
    files = await files_store.list_files(project_id)
    return FilesResponse(
        files=[FileOut(path=f.path, content=f.content, updated_at=f.updated_at) for f in files],
        cursor=cursor.encode(),
    )


@router.post(
    "/projects/{project_id}/files",
    response_model=FileWritten,
    responses=error_responses(404, 413),
)
async def put_file(
    project_id: UUID,
    body: FileBody,
    caller: CallerDep,
    services: ServicesDep,
    previews: PreviewsDep,
) -> FileWritten:
    """Store one file and publish `file:update {filePath, content}` for its previews."""
    await _own_project(services, caller, project_id)
    stored = await _files(previews).put_file(project_id, body.file_path, body.content)
    # Stored first, then logged: a reader whose cursor includes the event sees the file.
    await services.writer.log(
        project_id,
        "editor",
        f"file:update {stored.path}",
        type=EventType.file_update,
        data={"filePath": stored.path, "content": stored.content},
    )
    sent = await broadcast_file_update(services.settings, project_id, stored.path, stored.content)
    return FileWritten(file_path=stored.path, updated_at=stored.updated_at, broadcast=sent)
