"""Request and response bodies of the HTTP API (their docstrings become the OpenAPI docs)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import ConfigDict, StringConstraints, model_validator

from schemas.base import Model
from schemas.status import ProjectStatus, RunStatus

#: Free text as PostgreSQL can store it: any characters but NUL.
NO_NUL = r"^[^\x00]*$"


#: Free text with at least one visible character (a title of spaces names nothing).
NOT_BLANK = r"^[^\x00]*[^\x00\s][^\x00]*$"


Title = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=NOT_BLANK)]
Description = Annotated[str, StringConstraints(max_length=20_000, pattern=NO_NUL)]
Category = Annotated[str, StringConstraints(max_length=100, pattern=NO_NUL)]
Task = Annotated[str, StringConstraints(min_length=1, max_length=20_000, pattern=NO_NUL)]


class SpawnConfig(Model):
    """Seed 000's edge-function envelope: `{project_id, config: {title, description}}`."""

    model_config = ConfigDict(extra="forbid")

    title: Title
    """The idea's title."""
    description: Description | None = None
    """The idea in the person's words."""
    category: Category | None = None
    """A free category (e.g. food-tech)."""


class SpawnRequest(Model):
    """Spawn a project from an idea (seed 000): flat, or in the edge function's envelope."""

    model_config = ConfigDict(
        extra="forbid",
        # `_one_idea` for the docs: a `title` or a `config` (null counts as absent), not both.
        json_schema_extra={
            "oneOf": [
                {"required": ["title"], "properties": {"title": {"type": "string"}}},
                {"required": ["config"], "properties": {"config": {"type": "object"}}},
            ]
        },
    )

    title: Title | None = None
    """The idea's title (required unless `config` carries it)."""
    description: Description | None = None
    """The idea in the person's words."""
    category: Category | None = None
    """A free category (e.g. food-tech)."""
    project_id: UUID | None = None
    """Seed 000's envelope field; ignored (myyc assigns ids) but accepted."""
    config: SpawnConfig | None = None
    """Seed 000's envelope: the idea, when not given flat."""
    user_id: UUID | None = None
    """The owner, when a server spawns on a user's behalf (ignored for user callers)."""

    @model_validator(mode="after")
    def _one_idea(self) -> SpawnRequest:
        if self.config is not None:
            if self.title is not None:
                raise ValueError("give the idea flat or in `config`, not both")
        elif self.title is None:
            raise ValueError("title is required")
        return self

    def idea(self) -> SpawnConfig:
        """The idea, wherever it was given."""
        if self.config is not None:
            return self.config
        assert self.title is not None
        return SpawnConfig(title=self.title, description=self.description, category=self.category)


class SpawnResponse(Model):
    """What a spawn answers (202): ids to follow the project by."""

    project_id: UUID
    """The new (or, for a repeated key, the first) project."""
    build_id: UUID
    """Its build session."""


class RunLine(Model):
    """One agent run, as the status shows it."""

    id: UUID
    """The run id."""
    agent_name: str
    """Which agent."""
    status: RunStatus
    """Where it is."""
    progress_percent: float
    """0..100."""
    current_step: str | None = None
    """What it is doing."""
    error: str | None = None
    """Why it failed."""


class StatusResponse(Model):
    """A project's status (seed 000's GET /status/{project_id})."""

    project_id: UUID
    """The project."""
    title: str
    """The idea's title."""
    status: ProjectStatus
    """spawning → running → completed | failed | canceled."""
    progress: int
    """0..100."""
    github_url: str | None = None
    """The repository."""
    deployment_url: str | None = None
    """The deployed app."""
    preview_url: str | None = None
    """The live preview."""
    error: str | None = None
    """Why it failed."""
    created_at: datetime
    """When it was spawned."""
    updated_at: datetime
    """When it last changed."""
    runs: list[RunLine]
    """One line per agent run."""


class AgentRunRequest(Model):
    """Start an agent run (seed 001's POST /agents/run)."""

    model_config = ConfigDict(extra="forbid")

    task_description: Task
    """What the agent should do."""
    task_id: UUID | None = None
    """The caller's task id."""
    user_id: UUID | None = None
    """The owner, when a server starts it on a user's behalf."""
    agent_name: Literal["orchestrator"] = "orchestrator"
    """Which agent runs it: only the orchestrator takes tasks directly."""


class AgentRunResponse(Model):
    """The started run."""

    run_id: UUID
    """Follow it with GET /agent-runs or the project's stream."""
    project_id: UUID
    """The project the run reports to."""


class AgentRunOut(Model):
    """An agent run (seed 001's columns)."""

    model_config = ConfigDict(from_attributes=True)

    id: UUID
    """The run id."""
    task_id: UUID | None
    """The caller's task id."""
    project_id: UUID | None
    """The project it reports to."""
    user_id: UUID | None
    """The owner."""
    agent_name: str
    """Which agent."""
    agent_id: str
    """The agent instance."""
    status: RunStatus
    """Where it is in seed 001's flow."""
    current_step: str | None
    """What it is doing."""
    progress_percent: float
    """0..100."""
    result: dict[str, Any] | None
    """Its result."""
    error: str | None
    """Why it failed."""
    metadata: dict[str, Any]
    """Free context."""
    verification_attempts: int
    """Verifications so far."""
    verification_evidence: list[Any]
    """What they found."""
    started_at: datetime | None
    """When it started."""
    completed_at: datetime | None
    """When it finished."""
    updated_at: datetime
    """When it last changed."""
