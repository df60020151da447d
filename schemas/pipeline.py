"""The build pipeline's shape as data: its agents and its graph steps.

The API creates one pending run per agent at spawn time and the CLI draws the steps, without
importing the agents themselves.
"""

from __future__ import annotations

#: The agents of a build, in the order they first run (each gets a pending run at spawn).
PIPELINE: tuple[str, ...] = ("planner", "codegen", "github", "preview", "verifier")

#: The graph's nodes in order (seed 004 §6 plus codegen, github, preview and verify), and the
#: agent whose run each reports on; `escalate` and `finalize` belong to the orchestrator.
STEPS: tuple[tuple[str, str], ...] = (
    ("ingest_vibe", "planner"),
    ("generate_plan", "planner"),
    ("codegen", "codegen"),
    ("github", "github"),
    ("preview", "preview"),
    ("verify", "verifier"),
    ("finalize", "orchestrator"),
)

#: Nodes that provision a generated backend (filled by the provisioning work; skipped when a
#: build has no backend).
PROVISIONING_STEPS: tuple[str, ...] = (
    "provision_environment",
    "apply_migrations",
    "configure_rls",
    "deploy_edge_functions",
    "configure_analytics",
)
