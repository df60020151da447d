"""Rows of the control-plane tables, as the stores return them."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import ConfigDict, Field

from schemas.base import Model
from schemas.status import BuildStatus, ProjectStatus, RunStatus


class _Row(Model):
    model_config = ConfigDict(frozen=True, extra="ignore")


class Project(_Row):
    """A project: one per idea (seed 000)."""

    id: UUID
    """The project id."""
    user_id: UUID | None = None
    """The owner; None for projects spawned locally without a user."""
    title: str
    """The idea's title."""
    description: str | None = None
    """The idea in the person's words."""
    category: str | None = None
    """A free category (e.g. food-tech)."""
    status: ProjectStatus
    """spawning → running → completed | failed | canceled."""
    progress: int = Field(ge=0, le=100)
    """0..100, derived from the agent runs."""
    github_url: str | None = None
    """The repository, once created."""
    deployment_url: str | None = None
    """The deployed app, once deployed."""
    preview_url: str | None = None
    """The live preview, while one runs."""
    error: str | None = None
    """Why the project failed."""
    error_code: str | None = None
    """The ErrorCode of `error`."""
    created_at: datetime
    """When it was spawned."""
    updated_at: datetime
    """When it last changed."""


class NewProject(Model):
    """What creating a project needs."""

    title: str = Field(min_length=1, max_length=200)
    """The idea's title."""
    description: str | None = Field(default=None, max_length=20_000)
    """The idea in the person's words."""
    category: str | None = Field(default=None, max_length=100)
    """A free category."""
    user_id: UUID | None = None
    """The owner."""
    idempotency_key: str | None = Field(default=None, max_length=200)
    """A spawn's idempotency key."""


class BuildSession(_Row):
    """One run of the pipeline for a project (seed 004)."""

    id: UUID
    """The build id."""
    project_id: UUID | None = None
    """The project being built."""
    user_id: UUID | None = None
    """The owner."""
    status: BuildStatus
    """queued → running → succeeded | failed | canceled."""
    template: str | None = None
    """The template the plan starts from."""
    vibe_text: str | None = None
    """The idea text (seed 004's vibe)."""
    options: dict[str, Any] = Field(default_factory=dict)
    """Build options."""
    plan: dict[str, Any] | None = None
    """The plan, once made."""
    environment: dict[str, Any] | None = None
    """Provisioned environment refs and URLs."""
    outputs: dict[str, Any] | None = None
    """What the build produced."""
    error: str | None = None
    """Why it failed."""
    error_code: str | None = None
    """The ErrorCode of `error`."""
    lease_owner: str | None = None
    """The orchestrator process that owns the build now (None: nobody)."""
    lease_expires_at: datetime | None = None
    """The owner renews this; past it, anyone may resume the build from its checkpoint."""
    resume_count: int = 0
    """How often the build was taken over after its owner died."""
    presence: dict[str, Any] | None = None
    """The architect's latest presence (seed 004 §4.1): step, focus, progress 0..1."""
    finished_at: datetime | None = None
    """When it ended."""
    created_at: datetime
    """When it was queued."""
    updated_at: datetime | None = None
    """When it last changed."""


class Approval(_Row):
    """A person's decision an escalated build waits for."""

    token: str
    """The approval's secret token (in its URL)."""
    session_id: UUID
    """The build waiting on it."""
    project_id: UUID
    """The project."""
    run_id: UUID | None = None
    """The escalated agent run."""
    user_id: UUID | None = None
    """The project's owner (who may decide)."""
    attempt: int
    """Which escalation of the build this is (1, 2, …)."""
    status: str
    """pending, approve, reject, retry or expired."""
    reason: str
    """Why the build was escalated."""
    evidence: dict[str, Any] = Field(default_factory=dict)
    """The failed verification's evidence."""
    note: str | None = None
    """The decider's note."""
    expires_at: datetime
    """When a pending approval expires (and the build fails)."""
    decided_at: datetime | None = None
    """When it was decided."""
    created_at: datetime
    """When the build was escalated."""


class ModelUsage(_Row):
    """One model call's tokens and cost (the cost ledger)."""

    project_id: UUID
    """The project."""
    session_id: UUID | None = None
    """The build."""
    run_id: UUID | None = None
    """The agent run that made the call."""
    agent_name: str
    """The agent."""
    provider: str
    """offline, openai, anthropic or xai."""
    model: str
    """The model."""
    prompt_name: str | None = None
    """The prompt used (a `prompts` name)."""
    prompt_version: int | None = None
    """Its version."""
    input_tokens: int = 0
    """Tokens sent."""
    output_tokens: int = 0
    """Tokens received."""
    cost_usd: float | None = None
    """List-price cost in USD; None for an unpriced model."""
    attempts: int = 1
    """Calls it took (retries included)."""


class Prompt(_Row):
    """A system prompt version (seed 002): one active per name."""

    name: str
    """The prompt's name (planner, codegen, …)."""
    version: int
    """Its version."""
    role: str = "system"
    """The chat role it is sent as."""
    content: str
    """The text."""


class AgentRun(_Row):
    """One agent's run (seed 001)."""

    id: UUID
    """The run id."""
    task_id: UUID | None = None
    """The caller's task id (seed 001)."""
    project_id: UUID | None = None
    """The project, for pipeline runs."""
    session_id: UUID | None = None
    """The build session, for pipeline runs."""
    user_id: UUID | None = None
    """The owner."""
    agent_name: str
    """Which agent."""
    agent_id: str
    """The agent instance."""
    status: RunStatus
    """Where the run is in seed 001's flow."""
    current_step: str | None = None
    """What it is doing now."""
    progress_percent: float = 0.0
    """0..100."""
    result: dict[str, Any] | None = None
    """What it produced."""
    error: str | None = None
    """Why it failed."""
    error_code: str | None = None
    """The ErrorCode of `error`."""
    metadata: dict[str, Any] = Field(default_factory=dict)
    """Free context."""
    verification_attempts: int = 0
    """How many verifications ran."""
    verification_evidence: list[Any] = Field(default_factory=list)
    """What each verification found."""
    heartbeat_at: datetime | None = None
    """The run's last sign of life."""
    started_at: datetime | None = None
    """When it was created."""
    completed_at: datetime | None = None
    """When it reached completed, failed or canceled."""
    updated_at: datetime
    """When it last changed."""


class NewRun(Model):
    """What starting an agent run needs."""

    agent_name: str = Field(min_length=1, max_length=100)
    """Which agent."""
    agent_id: str = Field(default="", max_length=200)
    """The agent instance (defaults to the agent name)."""
    task_id: UUID | None = None
    """The caller's task id."""
    project_id: UUID | None = None
    """The project."""
    session_id: UUID | None = None
    """The build session."""
    user_id: UUID | None = None
    """The owner."""
    metadata: dict[str, Any] = Field(default_factory=dict)
    """Free context."""


class PlanItem(_Row):
    """A `project_plan` row (seed 002)."""

    id: UUID
    """The row id."""
    project_id: UUID
    """The project."""
    feature: str
    """The feature."""
    status: str
    """planned, in_progress, done or dropped."""
    notes: str | None = None
    """Notes."""
    priority: str
    """high, medium or low."""
    position: int
    """Order in the plan."""


class Activity(_Row):
    """An `activity_log` row (seed 002): every action, by the AI, a user or the system."""

    id: UUID
    """The row id."""
    project_id: UUID
    """The project."""
    actor: str
    """ai, user or system."""
    action: str
    """What happened."""
    details: dict[str, Any] = Field(default_factory=dict)
    """Detail."""
    created_at: datetime
    """When."""
