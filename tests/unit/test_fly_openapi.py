"""Every request FlyMachines sends, and every answer the fake gives, checked against Fly's
published OpenAPI document (vendored at `clients/specs/fly-machines.openapi.json`).

One scripted run drives every client operation through a recording transport. Each recorded
request must name a documented (method, path template); its path parameters must fill the
template; its query parameters must be declared; its JSON body must validate against the
operation's requestBody schema, made strict (`additionalProperties: false` on every object that
lists properties) so a misspelled field fails. The fake's successful answers must use a
documented status code and validate against the documented response schema.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft4Validator  # type: ignore[import-untyped]
from pydantic import BaseModel
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from clients import fly_machines as fm
from clients.fly_machines import FlyError, FlyLeaseHeld, FlyMachines, FlyWaitTimeout
from tests.fakes.fly import FakeClock, FlyFake

# Vendored in the repository, so these tests run on every machine (a missing file fails).
SPEC_PATH = Path(__file__).resolve().parents[2] / "clients" / "specs" / "fly-machines.openapi.json"

BASE_URL = "http://fly.test/v1"
LOOSE_URI = "urn:fly-machines:loose"
STRICT_URI = "urn:fly-machines:strict"
APP = "openapi-app"
#: Every operation the client implements, by the document's operationId.
CLIENT_OPERATIONS = {
    "Apps_create",
    "Apps_show",
    "Machines_create",
    "Machines_show",
    "Machines_list",
    "Machines_update",
    "Machines_start",
    "Machines_stop",
    "Machines_suspend",
    "Machines_delete",
    "Machines_wait",
    "Machines_create_lease",
    "Machines_show_lease",
    "Machines_release_lease",
    "Machines_show_metadata",
    "Machines_upsert_metadata",
    "Machines_delete_metadata",
}


def _rewrite_refs(node: Any, uri: str) -> Any:
    """Make the document's local `#/…` refs absolute, so inline schemas resolve too."""
    if isinstance(node, dict):
        out = {k: _rewrite_refs(v, uri) for k, v in node.items()}
        ref = out.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            out["$ref"] = uri + ref
        return out
    if isinstance(node, list):
        return [_rewrite_refs(v, uri) for v in node]
    return node


def _strict(node: Any) -> Any:
    """Close every object schema that lists its properties, so unknown fields fail."""
    if isinstance(node, dict):
        out = {k: _strict(v) for k, v in node.items()}
        if isinstance(out.get("properties"), dict) and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


@dataclass(frozen=True)
class Operation:
    """One documented (method, path) with its operation object."""

    method: str
    template: str
    pattern: re.Pattern[str]
    spec: dict[str, Any]

    @property
    def operation_id(self) -> str:
        """The document's operationId."""
        return str(self.spec["operationId"])

    def parameters(self, where: str) -> dict[str, dict[str, Any]]:
        """Declared parameters of one kind (`path`, `query`, `header`)."""
        return {p["name"]: p for p in self.spec.get("parameters", []) if p["in"] == where}


class Spec:
    """The loaded document, its operations, and validators for its schemas."""

    def __init__(self, path: Path) -> None:
        """Load and index the document."""
        self.raw: dict[str, Any] = json.loads(path.read_text())
        self.base_path = "/v1"
        assert self.raw["servers"][0]["url"].endswith(self.base_path)
        loose = _rewrite_refs(self.raw, LOOSE_URI)
        strict = _rewrite_refs(_strict(self.raw), STRICT_URI)
        self.loose, self.strict = loose, strict
        self.registry: Registry[Any] = Registry().with_resources(
            [
                (LOOSE_URI, Resource.from_contents(loose, default_specification=DRAFT4)),
                (STRICT_URI, Resource.from_contents(strict, default_specification=DRAFT4)),
            ]
        )
        self.operations: list[Operation] = []
        for template, item in self.raw["paths"].items():
            regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
            for method, op in item.items():
                if method in ("get", "post", "put", "patch", "delete"):
                    self.operations.append(
                        Operation(method.upper(), template, re.compile(f"^{regex}$"), op)
                    )

    def find(self, method: str, path: str) -> tuple[Operation, dict[str, str]]:
        """The one documented operation a request targets, and its path parameters."""
        assert path.startswith(self.base_path + "/"), path
        local = path[len(self.base_path) :]
        hits = [
            (op, m.groupdict())
            for op in self.operations
            if op.method == method and (m := op.pattern.match(local))
        ]
        assert len(hits) == 1, f"{method} {local} matches {[h[0].template for h in hits]}"
        return hits[0]

    def validator(self, schema: dict[str, Any]) -> Draft4Validator:
        """A validator for an (already ref-rewritten) schema."""
        return Draft4Validator(schema, registry=self.registry)

    def request_schema(self, op: Operation) -> dict[str, Any] | None:
        """The strict requestBody schema, if the operation takes a JSON body."""
        strict_op = self.strict["paths"][op.template][op.method.lower()]
        body = strict_op.get("requestBody")
        if body is None:
            return None
        schema: dict[str, Any] = body["content"]["application/json"]["schema"]
        return schema

    def response_schema(self, op: Operation, status: int) -> tuple[bool, dict[str, Any] | None]:
        """(documented?, schema) for a response status of an operation."""
        loose_op = self.loose["paths"][op.template][op.method.lower()]
        documented = loose_op.get("responses", {}).get(str(status))
        if documented is None:
            return False, None
        schema = documented.get("content", {}).get("application/json", {}).get("schema")
        return True, schema


@dataclass
class Exchange:
    """One request the client sent and the answer it got."""

    method: str
    url: httpx.URL
    headers: httpx.Headers
    body: Any
    status: int
    response: Any


class RecordingTransport(httpx.AsyncBaseTransport):
    """Passes requests to `inner` and keeps a copy of each request and answer."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        """Wrap `inner`."""
        self.inner = inner
        self.exchanges: list[Exchange] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Forward and record."""
        response = await self.inner.handle_async_request(request)
        content = await response.aread()
        self.exchanges.append(
            Exchange(
                method=request.method,
                url=request.url,
                headers=request.headers,
                body=json.loads(request.content) if request.content else None,
                status=response.status_code,
                response=json.loads(content) if content else None,
            )
        )
        return httpx.Response(
            response.status_code, headers=response.headers, content=content, request=request
        )


async def run_every_operation(fly: FlyMachines, fake: FlyFake, clock: FakeClock) -> None:
    """Call each client operation at least once, including its notable error answers."""
    await fly.create_app(APP, "personal", network="preview-net")
    await fly.get_app(APP)
    config = fm.MachineConfig(
        image="ghcr.io/myyc/preview-container:latest",
        env={"PROJECT_ID": "p-1"},
        guest=fm.MachineGuest(cpu_kind="shared", cpus=2, memory_mb=1024),
        init=fm.MachineInit(cmd=["node", "entrypoint.js"]),
        restart=fm.MachineRestart(policy="on-failure", max_retries=2),
        services=[
            fm.MachineService(
                protocol="tcp",
                internal_port=8080,
                autostart=True,
                autostop="suspend",
                min_machines_running=0,
                concurrency=fm.MachineServiceConcurrency(
                    type="requests", soft_limit=20, hard_limit=25
                ),
                ports=[
                    fm.MachinePort(port=443, handlers=["tls", "http"]),
                    fm.MachinePort(port=80, handlers=["http"], force_https=True),
                ],
            )
        ],
        checks={
            "http": fm.MachineCheck(
                type="http", port=8080, path="/health", interval="15s", timeout="2s"
            )
        },
        stop_config=fm.StopConfig(signal="SIGINT", timeout="5s"),
        metadata={"role": "preview", "session": "s-1"},
        auto_destroy=True,
        files=[fm.MachineFile(guest_path="/app/.env", raw_value="Zm9vPWJhcgo=")],
    )
    machine = await fly.create_machine(APP, config, name="preview-1", region="iad")
    leased = await fly.create_machine(APP, config, skip_launch=True, lease_ttl=30)
    await fly.get_machine(APP, machine.id)
    await fly.list_machines(APP)
    await fly.list_machines(
        APP, metadata={"role": "preview"}, include_deleted=True, region="iad", state="started"
    )
    current = await fly.get_machine(APP, machine.id)
    assert current.config is not None
    await fly.update_machine(APP, machine.id, current.config, current_version=current.instance_id)
    started = await fly.wait_machine(APP, machine.id, "started", timeout_s=10)
    await fly.stop_machine(APP, machine.id, signal="SIGTERM", timeout=10)
    await fly.stop_machine(APP, machine.id)
    await fly.wait_machine(APP, machine.id, "stopped", instance_id=started.version)
    await fly.start_machine(APP, machine.id)
    await fly.wait_machine(APP, machine.id, "started", version=started.version)
    await fly.suspend_machine(APP, machine.id)

    lease = await fly.acquire_lease(APP, machine.id, ttl=20, description="openapi run")
    with pytest.raises(FlyLeaseHeld):
        await fly.acquire_lease(APP, machine.id)
    await fly.get_lease(APP, machine.id)
    await fly.refresh_lease(APP, machine.id, lease.nonce, ttl=40)
    await fly.set_metadata(APP, machine.id, "owner", "agent-7", nonce=lease.nonce)
    await fly.get_metadata(APP, machine.id)
    await fly.delete_metadata(APP, machine.id, "owner", nonce=lease.nonce)
    await fly.release_lease(APP, machine.id, lease.nonce)
    async with fly.lease(APP, machine.id, ttl=10) as held:
        await fly.start_machine(APP, machine.id, nonce=held.nonce)

    fake.transition_delay = 600
    await fly.start_machine(APP, leased.id, nonce=leased.nonce)
    with pytest.raises(FlyWaitTimeout):
        await fly.wait_machine(APP, leased.id, "started", timeout_s=2)
    fake.transition_delay = 0
    clock.advance(600)
    await fly.destroy_machine(APP, leased.id, force=True, nonce=leased.nonce)
    await fly.destroy_machine(APP, machine.id, force=True)
    await fly.wait_machine(APP, machine.id, "destroyed")


@pytest.fixture(scope="module")
def spec() -> Spec:
    """The vendored Fly OpenAPI document."""
    return Spec(SPEC_PATH)


@pytest.fixture(scope="module")
async def exchanges() -> list[Exchange]:
    """Everything the client sent (and got back) during one run of every operation."""
    clock = FakeClock()
    fake = FlyFake(clock=clock, sleep=clock.sleep)
    recorder = RecordingTransport(fake.transport())
    async with httpx.AsyncClient(transport=recorder) as http:
        fly = FlyMachines(
            "FlyV1 fm2_test", base_url=BASE_URL, http_client=http, clock=clock, sleep=clock.sleep
        )
        await run_every_operation(fly, fake, clock)
    return recorder.exchanges


def test_the_run_covers_every_client_operation(spec: Spec, exchanges: list[Exchange]) -> None:
    """The scripted run really exercised each operation the client implements."""
    seen = {spec.find(e.method, e.url.path)[0].operation_id for e in exchanges}
    assert seen == CLIENT_OPERATIONS


def test_requests_target_documented_paths_with_filled_parameters(
    spec: Spec, exchanges: list[Exchange]
) -> None:
    """Method and path template exist; every declared path parameter is filled."""
    for exchange in exchanges:
        op, params = spec.find(exchange.method, exchange.url.path)
        assert set(params) == set(op.parameters("path")), op.template
        for name, value in params.items():
            assert value, (op.template, name)
            assert "{" not in value, (op.template, name, value)


def test_query_parameters_are_declared_and_typed(spec: Spec, exchanges: list[Exchange]) -> None:
    """Query names exist on the operation and their values fit the declared type.

    `metadata.{key}` is Fly's documented list filter (fly.io docs, REFERENCE §2) but this
    edition of the document does not declare it, so it is the one allowed exception.
    """
    for exchange in exchanges:
        op, _ = spec.find(exchange.method, exchange.url.path)
        declared = op.parameters("query")
        for name, value in exchange.url.params.multi_items():
            if op.operation_id == "Machines_list" and name.startswith("metadata."):
                continue
            assert name in declared, f"{op.operation_id}: undeclared query parameter {name}"
            schema = declared[name].get("schema", {})
            decoded: Any = value
            if schema.get("type") == "boolean":
                assert value in ("true", "false"), (name, value)
                decoded = value == "true"
            elif schema.get("type") == "integer":
                decoded = int(value)
            errors = list(spec.validator(schema).iter_errors(decoded))
            assert not errors, (op.operation_id, name, value, [e.message for e in errors])


def test_required_headers_are_sent(spec: Spec, exchanges: list[Exchange]) -> None:
    """Header parameters the document marks required (the lease nonce on release) are there."""
    for exchange in exchanges:
        op, _ = spec.find(exchange.method, exchange.url.path)
        for name, param in op.parameters("header").items():
            if param.get("required"):
                assert exchange.headers.get(name), (op.operation_id, name)


def test_request_bodies_validate_strictly(spec: Spec, exchanges: list[Exchange]) -> None:
    """JSON bodies match the requestBody schema, with unknown field names rejected."""
    checked = 0
    for exchange in exchanges:
        op, _ = spec.find(exchange.method, exchange.url.path)
        schema = spec.request_schema(op)
        if schema is None:
            assert exchange.body is None, f"{op.operation_id} takes no body"
            continue
        if exchange.body is None:
            required = spec.raw["paths"][op.template][op.method.lower()]["requestBody"]
            assert not required.get("required"), f"{op.operation_id} needs a body"
            continue
        errors = [e.message for e in spec.validator(schema).iter_errors(exchange.body)]
        assert not errors, (op.operation_id, exchange.body, errors)
        checked += 1
    assert checked >= 8


def test_successful_answers_use_documented_status_codes(
    spec: Spec, exchanges: list[Exchange]
) -> None:
    """The fake's 2xx codes are the document's (create machine 200, lease 201, metadata 204)."""
    for exchange in exchanges:
        if exchange.status >= 300:
            continue
        op, _ = spec.find(exchange.method, exchange.url.path)
        documented, _ = spec.response_schema(op, exchange.status)
        assert documented, f"{op.operation_id} answered undocumented {exchange.status}"


def test_fake_answers_validate_against_documented_schemas(
    spec: Spec, exchanges: list[Exchange]
) -> None:
    """Where the document gives a response schema, the fake's body fits it."""
    checked = 0
    for exchange in exchanges:
        op, _ = spec.find(exchange.method, exchange.url.path)
        _, schema = spec.response_schema(op, exchange.status)
        if schema is None:
            continue
        errors = [e.message for e in spec.validator(schema).iter_errors(exchange.response)]
        assert not errors, (op.operation_id, exchange.status, errors)
        checked += 1
    assert checked >= 10


def test_error_answers_have_the_documented_error_shape(
    spec: Spec, exchanges: list[Exchange]
) -> None:
    """Every error the fake gave is `{"error", "status"}` per the ErrorResponse schema."""
    errors_seen = [e for e in exchanges if e.status >= 400]
    assert {e.status for e in errors_seen} >= {408, 409}
    validator = spec.validator({"$ref": f"{STRICT_URI}#/components/schemas/ErrorResponse"})
    for exchange in errors_seen:
        assert not list(validator.iter_errors(exchange.response)), exchange.response


@pytest.mark.parametrize(
    ("schema", "body"),
    [
        ("CreateAppRequest", {"app_name": "x", "org_slug": "personal"}),
        ("CreateMachineRequest", {"config": {"image": "x", "restart": {"policy": "on-fail"}}}),
        ("CreateMachineRequest", {"config": {"image": "x", "guest": {"memory": 256}}}),
        ("StopRequest", {"signal": "TERM"}),
        ("CreateLeaseRequest", {"ttl": "30s"}),
    ],
)
def test_the_strict_validator_catches_wrong_bodies(
    spec: Spec, schema: str, body: dict[str, Any]
) -> None:
    """Negative control: misspelled fields and bad enum values do fail validation."""
    validator = spec.validator({"$ref": f"{STRICT_URI}#/components/schemas/{schema}"})
    assert list(validator.iter_errors(body))


@pytest.mark.parametrize(
    ("model", "schema"),
    [
        (fm.App, "App"),
        (fm.AppOrganizationInfo, "AppOrganizationInfo"),
        (fm.CreateAppRequest, "CreateAppRequest"),
        (fm.Machine, "Machine"),
        (fm.MachineConfig, "fly.MachineConfig"),
        (fm.MachineGuest, "fly.MachineGuest"),
        (fm.MachineInit, "fly.MachineInit"),
        (fm.MachineService, "fly.MachineService"),
        (fm.MachineServiceConcurrency, "fly.MachineServiceConcurrency"),
        (fm.MachinePort, "fly.MachinePort"),
        (fm.MachineRestart, "fly.MachineRestart"),
        (fm.MachineMount, "fly.MachineMount"),
        (fm.MachineCheck, "fly.MachineCheck"),
        (fm.MachineFile, "fly.File"),
        (fm.StopConfig, "fly.StopConfig"),
        (fm.ImageRef, "ImageRef"),
        (fm.MachineEvent, "MachineEvent"),
        (fm.CheckStatus, "CheckStatus"),
        (fm.CreateMachineRequest, "CreateMachineRequest"),
        (fm.UpdateMachineRequest, "UpdateMachineRequest"),
        (fm.StopRequest, "StopRequest"),
        (fm.CreateLeaseRequest, "CreateLeaseRequest"),
        (fm.Lease, "Lease"),
        (fm.WaitMachineResponse, "WaitMachineResponse"),
        (fm.UpsertMetadataKeyRequest, "upsertMetadataKeyRequest"),
    ],
)
def test_model_fields_are_named_as_in_the_document(
    spec: Spec, model: type[BaseModel], schema: str
) -> None:
    """Each model's fields are exactly its component schema's properties."""
    properties = set(spec.raw["components"]["schemas"][schema]["properties"])
    assert set(model.model_fields) == properties


def test_exceptions_are_one_tree() -> None:
    """Every public exception descends from FlyError."""
    exported = [getattr(fm, name) for name in fm.__all__]
    errors = [obj for obj in exported if isinstance(obj, type) and issubclass(obj, Exception)]
    assert len(errors) >= 15
    assert all(issubclass(cls, FlyError) for cls in errors)
