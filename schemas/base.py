"""The base of every pydantic model myyc exposes: field docstrings become descriptions.

A docstring under a field (the house style) is then the field's `description` in the JSON
schema, so the OpenAPI document at /openapi.json documents every field of every body.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Model(BaseModel):
    """A pydantic model whose field docstrings are its field descriptions."""

    model_config = ConfigDict(use_attribute_docstrings=True)
