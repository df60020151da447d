"""A project plan (seed 002): features with priority, the files to create, the tables.

The planner writes a Plan; codegen writes the files (`PlannedFile`, path and content). Every
feature has a `key`: the generated app marks the element that implements it with
`data-feature="<key>"`, which is how the verifier checks that each planned feature is there.
"""

from __future__ import annotations

import posixpath
import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from schemas.base import Model

MAX_FILE_BYTES = 512 * 1024
MAX_FILES = 40
FEATURE_KEY = r"^[a-z][a-z0-9-]{0,62}$"


def feature_key(text: str) -> str:
    """A feature key from free text: lowercase ASCII words joined by dashes."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    key = "-".join(words)[:63].strip("-")
    return key if key and key[0].isalpha() else f"f-{key}".strip("-")[:63] or "feature"


def safe_path(value: str) -> str:
    """`value` normalised, if it is a relative path that stays inside the project.

    Raises ValueError for an absolute path, one that climbs out (`..`), a backslash, a NUL
    or a control character, or a path with an empty or dot-only final part.
    """
    normal = posixpath.normpath(value)
    if (
        value.startswith("/")
        or normal == "."
        or normal.startswith("..")
        or "\\" in value
        or any(ord(c) < 32 or c == "\x7f" for c in value)
    ):
        raise ValueError("must be a relative path inside the project")
    return normal


class Feature(Model):
    """One feature of the plan (a `project_plan` row)."""

    key: str = Field(default="", pattern=r"^$|" + FEATURE_KEY)
    """A stable short name; the app marks the feature with `data-feature="<key>"`."""
    feature: str = Field(min_length=1, max_length=500)
    """What the app should do."""
    priority: Literal["high", "medium", "low"] = "medium"
    """How much it matters for a first version."""
    notes: str | None = Field(default=None, max_length=5000)
    """Why, or how."""

    @model_validator(mode="after")
    def _default_key(self) -> Feature:
        if not self.key:
            self.key = feature_key(self.feature)
        return self


class Column(Model):
    """A column of a planned table."""

    name: str = Field(pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    """The column name."""
    type: str = Field(min_length=1, max_length=100)
    """Its SQL type."""


class Table(Model):
    """A table the app needs."""

    name: str = Field(pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    """The table name."""
    columns: list[Column] = Field(min_length=1)
    """Its columns."""


class PlannedFile(Model):
    """A file of the generated app."""

    path: str = Field(min_length=1, max_length=300)
    """A relative path inside the project."""
    content: str = Field(max_length=MAX_FILE_BYTES)
    """The file's text."""

    @field_validator("path")
    @classmethod
    def _relative(cls, value: str) -> str:
        return safe_path(value)


class FileSpec(Model):
    """A file the plan asks codegen to write."""

    path: str = Field(min_length=1, max_length=300)
    """A relative path inside the project."""
    purpose: str = Field(default="", max_length=1000)
    """What the file is for."""

    @field_validator("path")
    @classmethod
    def _relative(cls, value: str) -> str:
        return safe_path(value)


class Plan(Model):
    """What the planner decided."""

    summary: str = Field(max_length=5000)
    """One paragraph on the app."""
    features: list[Feature] = Field(min_length=1, max_length=30)
    """Features, most important first."""
    files: list[FileSpec] = Field(min_length=1, max_length=MAX_FILES)
    """The files of a small working web app (codegen writes their content)."""
    tables: list[Table] = Field(default_factory=list)
    """Tables the app's backend needs (provisioned when the build has a backend)."""
    template: str | None = Field(default=None, max_length=50)
    """The template the plan started from (seed 004: marketplace, saas), if any."""

    @model_validator(mode="after")
    def _unique(self) -> Plan:
        keys = [f.key for f in self.features]
        if len(set(keys)) != len(keys):
            raise ValueError("feature keys must be unique")
        paths = [f.path for f in self.files]
        if len(set(paths)) != len(paths):
            raise ValueError("file paths must be unique")
        return self
