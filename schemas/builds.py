"""Bodies of the build API: seed 004's build sessions, cancel/resume, approvals, the cost ledger.

Seed 004 names its fields in camelCase (`vibeText`, `sessionId`), and so do these bodies.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import ConfigDict, Field, StringConstraints

from schemas.api import NO_NUL, NOT_BLANK
from schemas.base import Model
from schemas.status import BuildStatus

VibeText = Annotated[str, StringConstraints(min_length=1, max_length=20_000, pattern=NOT_BLANK)]


class ModelOption(Model):
    """A model for this build only (overrides the admin setting and the environment)."""

    model_config = ConfigDict(extra="forbid")

    provider: Literal["offline", "openai", "anthropic", "xai"]
    """Which provider plans and writes the code."""
    model: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = None
    """The model name; the provider's default when absent."""


class BuildOptions(Model):
    """Seed 004's build options, plus the model and whether to start a live preview."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    enableAnalytics: bool = False
    """Attach the analytics demo (Iceberg) to the generated backend."""
    enableDriftSentinel: bool = False
    """Watch the generated backend for drift from its spec."""
    environmentMode: Literal["branch", "project"] = "branch"
    """Provision a Supabase branch (fast) or a new project."""
    model: ModelOption | None = None
    """The model for this build (default: the admin setting, else the environment)."""
    preview: bool = True
    """Start a live preview while building."""


class SessionRequest(Model):
    """Create a build session (seed 004's POST /sessions)."""

    model_config = ConfigDict(extra="forbid")

    vibeText: VibeText
    """The idea, in the person's words (1 to 20,000 characters)."""
    template: Literal["marketplace", "saas"]
    """The template the plan starts from."""
    options: BuildOptions = Field(default_factory=BuildOptions)
    """Build options."""
    userId: UUID | None = None
    """The owner, when a server creates it on a user's behalf (ignored for user callers)."""


class SessionCreated(Model):
    """The new build session."""

    sessionId: UUID
    """Follow it with GET /sessions/{id} and /sessions/{id}/events."""
    projectId: UUID
    """The project it builds (GET /status/{project_id}, the live stream)."""


class SessionOut(Model):
    """A build session (seed 004's GET /sessions/:id)."""

    id: UUID
    """The session (build) id."""
    status: BuildStatus
    """queued → running → succeeded | failed | canceled."""
    template: str | None
    """The template."""
    vibeText: str | None
    """The idea."""
    options: dict[str, Any]
    """Build options."""
    environment: dict[str, Any] | None
    """The provisioned environment's refs and URLs."""
    outputs: dict[str, Any] | None
    """What the build produced: repository, preview, files, verification."""
    error: str | None = None
    """Why it failed."""
    errorCode: str | None = None
    """The stable error code."""
    projectId: UUID | None
    """The project."""
    presence: dict[str, Any] | None
    """The architect's latest presence: step, focus, progress 0..1."""
    createdAt: datetime
    """When it was queued."""


class BuildEventOut(Model):
    """A build event (seed 004's `build_events`)."""

    id: UUID
    """The event id."""
    sessionId: UUID | None
    """The build session."""
    ts: datetime
    """When it happened."""
    type: str
    """plan_created, build_succeeded, … or a plain log line (`log`)."""
    message: str
    """The human-readable line."""
    payload: dict[str, Any] | None
    """Structured detail."""


class BuildAction(Model):
    """What a cancel or resume did."""

    sessionId: UUID
    """The build."""
    status: BuildStatus
    """Its status now."""


class DecisionRequest(Model):
    """A person's decision on an escalated build."""

    model_config = ConfigDict(extra="forbid")

    decision: Literal["approve", "reject", "retry"]
    """approve: accept the app as it is; reject: fail the build; retry: codegen again."""
    note: Annotated[str, StringConstraints(max_length=5000, pattern=NO_NUL)] | None = None
    """Why (kept with the decision; a retry passes it to codegen)."""


class ApprovalOut(Model):
    """An escalation waiting for (or given) a decision."""

    token: str
    """The approval's token."""
    sessionId: UUID
    """The build."""
    projectId: UUID
    """The project."""
    status: Literal["pending", "approve", "reject", "retry", "expired"]
    """pending until decided or expired."""
    reason: str
    """Why the build was escalated."""
    evidence: dict[str, Any]
    """The failed verification's evidence."""
    note: str | None
    """The decider's note."""
    expiresAt: datetime
    """When a pending approval expires and the build fails."""
    decidedAt: datetime | None
    """When it was decided."""


class CostLine(Model):
    """Model usage summed for one agent and model."""

    agent: str
    """The agent (planner, codegen)."""
    provider: str
    """The provider."""
    model: str
    """The model."""
    calls: int
    """Calls made."""
    inputTokens: int
    """Tokens sent."""
    outputTokens: int
    """Tokens received."""
    costUsd: float | None
    """List-price cost in USD (None when a model has no price)."""


class Costs(Model):
    """A project's cost ledger, summed."""

    projectId: UUID
    """The project."""
    calls: int
    """Model calls."""
    inputTokens: int
    """Tokens sent."""
    outputTokens: int
    """Tokens received."""
    costUsd: float
    """List-price cost in USD of the priced calls."""
    unpricedCalls: int
    """Calls to models without a price (not in costUsd)."""
    lines: list[CostLine]
    """Per agent and model."""


class ModelSetting(Model):
    """The admin setting choosing the model for new builds (no restart needed)."""

    model_config = ConfigDict(extra="forbid")

    provider: Literal["offline", "openai", "anthropic", "xai"]
    """The provider."""
    model: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = None
    """The model; the provider's default when absent."""
