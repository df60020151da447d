"""A project plan (seed 002): features with priority, the files to create, the tables."""

from __future__ import annotations

import posixpath
from typing import Literal

from pydantic import BaseModel, Field, field_validator

MAX_FILE_BYTES = 512 * 1024


class Feature(BaseModel):
    """One feature of the plan (a `project_plan` row)."""

    feature: str = Field(min_length=1, max_length=500)
    """What the app should do."""
    priority: Literal["high", "medium", "low"] = "medium"
    """How much it matters for a first version."""
    notes: str | None = Field(default=None, max_length=5000)
    """Why, or how."""


class Column(BaseModel):
    """A column of a planned table."""

    name: str = Field(pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    """The column name."""
    type: str = Field(min_length=1, max_length=100)
    """Its SQL type."""


class Table(BaseModel):
    """A table the app needs."""

    name: str = Field(pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    """The table name."""
    columns: list[Column] = Field(min_length=1)
    """Its columns."""


class PlannedFile(BaseModel):
    """A file of the generated app."""

    path: str = Field(min_length=1, max_length=300)
    """A relative path inside the project."""
    content: str = Field(max_length=MAX_FILE_BYTES)
    """The file's text."""

    @field_validator("path")
    @classmethod
    def _relative(cls, value: str) -> str:
        normal = posixpath.normpath(value)
        if value.startswith("/") or normal.startswith("..") or "\\" in value or "\x00" in value:
            raise ValueError("must be a relative path inside the project")
        return normal


class Plan(BaseModel):
    """What the planner decided."""

    summary: str = Field(max_length=5000)
    """One paragraph on the app."""
    features: list[Feature] = Field(min_length=1)
    """Features, most important first."""
    files: list[PlannedFile] = Field(min_length=1)
    """The files of a small working web app."""
    tables: list[Table] = Field(default_factory=list)
    """Tables the app needs."""
