"""Modal wiring for myyc, and nothing else: image, secrets, the web app, one function per agent,
the crons, and the `modal run` entry point. Behaviour lives in the packages it ships.

    modal deploy modal_app.py                                  # production
    modal run modal_app.py --title "AI Recipe App" --description "…"   # spawn one, watch it

Heavy imports happen inside the function bodies, so importing this file (every container
does, and so does `modal run`) stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import modal

APP_NAME = "myyc"
WEB_LABEL = "myyc-api"
ROOT = Path(__file__).resolve().parent

PACKAGES = (
    "agents", "api", "clients", "core", "local", "mcp_tools", "previews", "schemas", "store",
)  # fmt: skip
# Modal ships only *.py by default; ours carry data too (store/sql/bootstrap.sql), so ship
# every file but caches.
PACKAGE_IGNORE = ["**/__pycache__/**", "**/*.pyc"]
# store/migrate.py reads <store's parent>/supabase/migrations: the packages sit in /root.
SUPABASE_REMOTE_DIR = "/root/supabase"
# Migrations and seed are what runs there; the Deno edge functions deploy to Supabase instead.
SUPABASE_IGNORE = ["functions/**", ".*/**"]

# pyproject's runtime dependencies at exact versions (the ones the tests ran against);
# tests/unit/test_modal_app.py checks each is inside pyproject's range and installed here.
RUNTIME_PINS = (
    "anthropic==2.12.0",
    "fastapi==0.165.0",
    "fastapi-offline==1.7.7",
    "httpx==0.28.1",
    "langgraph==1.2.22",
    "langgraph-checkpoint-postgres==3.2.0",
    "mcp==2.3.0",
    "openai==3.54.0",
    "orjson==3.13.0",
    "psycopg[binary]==3.3.9",
    "psycopg-pool==3.3.3",
    "pydantic==2.14.3",
    "pydantic-settings==2.16.3",
    "pyjwt==2.15.1",
    "rich==15.0.0",
    "supabase==2.34.1",
    "uvicorn==0.54.0",
)
# pyproject dependencies the image leaves out, and why.
NOT_IN_IMAGE = {
    "modal": "Modal puts its own client in every container",
    "pgserver": "the embedded PostgreSQL of local mode; production uses Supabase",
}

image = (
    modal.Image.debian_slim(python_version="3.11")
    # The verifier runs `node --check` on every generated script.
    .apt_install("nodejs")
    .uv_pip_install(*RUNTIME_PINS)
    .add_local_python_source(*PACKAGES, ignore=PACKAGE_IGNORE)
    .add_local_dir(ROOT / "supabase", SUPABASE_REMOTE_DIR, ignore=SUPABASE_IGNORE)
)

app = modal.App(APP_NAME, image=image)

# -- secrets (created with `modal secret create <name> KEY=…`) ----------------------------------
SUPABASE = modal.Secret.from_name(
    "myyc-supabase",
    # DATABASE_URL: the build graph's checkpoints need a direct Postgres connection.
    required_keys=[
        "SUPABASE_URL",
        "SUPABASE_SERVICE_ROLE_KEY",
        "SUPABASE_JWT_SECRET",
        "DATABASE_URL",
    ],
)
HMAC = modal.Secret.from_name("myyc-hmac", required_keys=["MYYC_HMAC_SECRET"])
GITHUB = modal.Secret.from_name("myyc-github", required_keys=["GITHUB_TOKEN"])
# MYYC_LLM_PROVIDER and the chosen provider's key (OPENAI_API_KEY, ANTHROPIC_API_KEY,
# XAI_API_KEY); none is required: without them planning and codegen use the offline provider.
LLM = modal.Secret.from_name("myyc-llm", required_keys=[])
FLY = modal.Secret.from_name("myyc-fly", required_keys=["FLY_API_TOKEN", "FLY_APP"])


# -- agents: one Modal function each, named after the agent (ModalDispatcher looks them up) ------
@dataclass(frozen=True)
class AgentSpec:
    """How one agent's Modal function runs."""

    timeout: int
    """Seconds one run may take."""
    retries: int
    """Re-runs of an input whose container crashed (agents are idempotent per run)."""
    secrets: tuple[modal.Secret, ...]
    """Secrets beyond the store's."""


AGENT_FUNCTIONS: dict[str, AgentSpec] = {
    # The whole build waits inside the orchestrator, so it outlives every agent it calls.
    # A retry of a crashed orchestrator resumes the build from its checkpoint.
    "orchestrator": AgentSpec(timeout=60 * 60, retries=2, secrets=(HMAC,)),
    "planner": AgentSpec(timeout=10 * 60, retries=2, secrets=(LLM,)),
    "codegen": AgentSpec(timeout=20 * 60, retries=2, secrets=(LLM,)),
    "github": AgentSpec(timeout=10 * 60, retries=2, secrets=(GITHUB,)),
    "preview": AgentSpec(timeout=10 * 60, retries=2, secrets=(FLY, HMAC)),
    "verifier": AgentSpec(timeout=10 * 60, retries=2, secrets=()),
}


def _retries(n: int) -> modal.Retries | None:
    # Modal's retries are for lost containers; HTTP retries live in the clients. Small counts.
    return modal.Retries(max_retries=n, initial_delay=5.0, backoff_coefficient=2.0) if n else None


def _agent_function(name: str, spec: AgentSpec) -> modal.Function[..., Any, Any]:
    async def agent(**kwargs: str) -> Any:
        from core.runtime import run_agent

        return await run_agent(name, **kwargs)

    # A container finds its function as a module attribute named by the qualname, so each one
    # gets the global name it is stored under below (and `name=` gives its Modal name).
    agent.__name__ = agent.__qualname__ = f"{name}_agent"
    agent.__doc__ = f"The {name} agent (core/runtime.py runs it)."
    return app.function(
        name=name,
        timeout=spec.timeout,
        retries=_retries(spec.retries),
        secrets=[SUPABASE, *spec.secrets],
    )(agent)


for _name, _spec in AGENT_FUNCTIONS.items():
    globals()[f"{_name}_agent"] = _agent_function(_name, _spec)


# -- the API ------------------------------------------------------------------------------------
@app.function(name="web", secrets=[SUPABASE, HMAC], timeout=60 * 60)
@modal.concurrent(max_inputs=200, target_inputs=100)  # async handlers; SSE clients mostly idle
@modal.asgi_app(label=WEB_LABEL)
def web() -> Any:
    """The FastAPI app (the same one uvicorn serves locally); an SSE stream may last a build."""
    from api.app import create_app

    return create_app()


# -- crons --------------------------------------------------------------------------------------
@app.function(schedule=modal.Cron("*/10 * * * *"), secrets=[SUPABASE, FLY], timeout=5 * 60)
async def cleanup_orphans() -> Any:
    """Every 10 minutes: stop expired previews and machines nothing tracks."""
    from previews.cleanup import run_scheduled_cleanup

    return await run_scheduled_cleanup()


@app.function(schedule=modal.Cron("* * * * *"), secrets=[SUPABASE, HMAC], timeout=5 * 60)
async def recover_builds() -> Any:
    """Resume builds whose owner died, expire approvals, fail stalled runs (agents/recovery.py)."""
    from core.runtime import run_recovery

    return await run_recovery()


# -- `modal run modal_app.py --title …` -----------------------------------------------------------
@app.local_entrypoint()
def main(title: str, description: str = "", category: str = "") -> None:
    """Spawn a project on the deployed app and follow its log until it completes or fails.

    The API URL is `MYYC_API_URL` or the deployed web function's; requests are signed with
    `MYYC_HMAC_SECRET` (the value in the `myyc-hmac` secret).
    """
    import asyncio
    import sys

    from local.remote import resolve_api_url, spawn_and_follow
    from schemas.settings import get_settings

    secret = get_settings().myyc_hmac_secret
    if secret is None:
        raise SystemExit("set MYYC_HMAC_SECRET (as in the myyc-hmac secret) to sign the spawn")
    url = resolve_api_url(app_name=APP_NAME, function_name="web")
    _, status = asyncio.run(
        spawn_and_follow(
            url,
            secret.get_secret_value(),
            title=title,
            description=description,
            category=category,
            out=sys.stdout,
        )
    )
    if status != "completed":
        raise SystemExit(1)
