"""The PostgREST fake's wire behaviour (REFERENCE.md §3a), driven by the real supabase-py client.

supabase-py (`postgrest` 2.34) talks to the fake in-process through httpx's ASGI transport,
and once over a real loopback socket (uvicorn). Where the SDK hides the wire (status codes,
headers, empty bodies), a plain httpx request checks it. The fake executes on the session's
embedded PostgreSQL, so constraints, grants and RLS answer for themselves.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest
from postgrest import AsyncPostgrestClient
from postgrest.exceptions import APIError
from postgrest.types import CountMethod, ReturnMethod
from supabase import AsyncClientOptions, acreate_client

from local.server import serve
from tests.fakes.postgrest import PostgrestFake, sqlstate_status

BASE = "http://testserver"
REST = f"{BASE}/rest/v1"


@pytest.fixture
async def fake(db_url: str) -> AsyncIterator[PostgrestFake]:
    """PostgREST on a fresh migrated database."""
    fake = PostgrestFake(db_url)
    yield fake
    await fake.close()


@pytest.fixture
async def http(fake: PostgrestFake) -> AsyncIterator[httpx.AsyncClient]:
    """Plain httpx, in-process, for checking the wire itself."""
    async with httpx.AsyncClient(transport=fake.transport(), base_url=REST) as client:
        yield client


def _client(fake: PostgrestFake, http: httpx.AsyncClient, token: str) -> AsyncPostgrestClient:
    headers = {
        "Accept": "application/json",
        "Content-Type": "application/json",
        "apikey": fake.anon_key(),
        "Authorization": f"Bearer {token}",
    }
    return AsyncPostgrestClient(REST, headers=headers, http_client=http)


@pytest.fixture
def service(fake: PostgrestFake, http: httpx.AsyncClient) -> AsyncPostgrestClient:
    """supabase-py's PostgREST client with the service-role key."""
    return _client(fake, http, fake.service_role_key())


def _auth(fake: PostgrestFake, token: str | None = None) -> dict[str, str]:
    return {
        "apikey": fake.anon_key(),
        "Authorization": f"Bearer {token or fake.service_role_key()}",
    }


def _data(response: Any) -> Any:
    """A response's rows: supabase-py types `data` as any JSON, these tests know its shape."""
    return response.data


def _count(db_url: str, table: str) -> int:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(f"select count(*) from {table}").fetchone()
        assert row is not None
        return int(row[0])


# --------------------------------------------------------------------------- insert


async def test_insert_defaults_to_201_with_no_body(
    fake: PostgrestFake, http: httpx.AsyncClient, service: AsyncPostgrestClient
) -> None:
    r = await http.post("/projects", json={"title": "a"}, headers=_auth(fake))
    assert (r.status_code, r.content, r.headers["content-range"]) == (201, b"", "*/*")
    assert "content-type" not in r.headers
    res = (
        await service.table("projects")
        .insert({"title": "b"}, returning=ReturnMethod.minimal)
        .execute()
    )
    assert _data(res) == []


async def test_insert_representation_is_an_array_of_rows(
    http: httpx.AsyncClient, fake: PostgrestFake, service: AsyncPostgrestClient
) -> None:
    r = await http.post(
        "/projects",
        json=[{"title": "a"}, {"title": "b"}],
        headers={**_auth(fake), "Prefer": "return=representation"},
    )
    assert r.status_code == 201
    assert r.headers["content-type"] == "application/json; charset=utf-8"
    assert r.headers["preference-applied"] == "return=representation"
    rows = r.json()
    assert [(p["title"], p["status"], p["progress"]) for p in rows] == [
        ("a", "spawning", 0),
        ("b", "spawning", 0),
    ]
    # supabase-py returns the representation by default and names the columns (quoted).
    res = await service.table("projects").insert([{"title": "c"}]).execute()
    assert [p["title"] for p in _data(res)] == ["c"]
    assert fake.history[-1].query == "columns=%22title%22"
    assert fake.history[-1].prefer == "return=representation"


async def test_bulk_insert_keys_must_match_unless_columns_are_named(
    http: httpx.AsyncClient, fake: PostgrestFake, service: AsyncPostgrestClient, db_url: str
) -> None:
    r = await http.post(
        "/projects", json=[{"title": "a"}, {"title": "b", "category": "x"}], headers=_auth(fake)
    )
    assert (r.status_code, r.json()["code"], r.json()["message"]) == (
        400,
        "PGRST102",
        "All object keys must match",
    )
    assert _count(db_url, "projects") == 0
    # With ?columns= (supabase-py sends it for lists), a missing key is NULL …
    res = (
        await service.table("projects")
        .insert([{"title": "a"}, {"title": "b", "category": "x"}])
        .execute()
    )
    assert [(p["title"], p["category"]) for p in _data(res)] == [("a", None), ("b", "x")]
    # … or the column default with Prefer: missing=default.
    rows = [{"title": "c", "status": "running"}, {"title": "d"}]
    res = await service.table("projects").insert(rows, default_to_null=False).execute()
    assert [(p["title"], p["status"]) for p in _data(res)] == [("c", "running"), ("d", "spawning")]
    assert fake.history[-1].prefer == "return=representation,missing=default"


async def test_insert_errors(http: httpx.AsyncClient, fake: PostgrestFake) -> None:
    cases: list[tuple[str, Any, int, str]] = [
        ("/projects", {"title": "a", "nope": 1}, 400, "PGRST204"),
        ("/projects", {"title": ""}, 400, "23514"),
        ("/projects", {"description": "no title"}, 400, "23502"),
        (
            "/agent_runs",
            {"agent_name": "a", "agent_id": "a", "project_id": str(uuid.uuid4())},
            409,
            "23503",
        ),
        ("/nowhere", {"a": 1}, 404, "PGRST205"),
        ("/projects", [1, 2], 400, "PGRST102"),
    ]
    for path, body, status, code in cases:
        r = await http.post(path, json=body, headers=_auth(fake))
        assert (r.status_code, r.json()["code"]) == (status, code), r.text
        assert set(r.json()) == {"code", "message", "details", "hint"}
    r = await http.post("/projects", content=b"{not json", headers=_auth(fake))
    assert r.json() == {
        "code": "PGRST102",
        "details": None,
        "hint": None,
        "message": "Empty or invalid json",
    }


async def test_unique_violation_is_409_23505(
    service: AsyncPostgrestClient, http: httpx.AsyncClient, fake: PostgrestFake
) -> None:
    row = {"title": "a", "idempotency_key": "k"}
    await service.table("projects").insert(row).execute()
    with pytest.raises(APIError) as info:
        await service.table("projects").insert(row).execute()
    assert info.value.code == "23505"
    assert "projects_idempotency_key_idx" in (info.value.message or "")
    r = await http.post("/projects", json=row, headers=_auth(fake))
    assert r.status_code == 409


async def test_anon_insert_is_401_42501_and_a_user_gets_403(
    fake: PostgrestFake, http: httpx.AsyncClient, db_url: str
) -> None:
    anon = _client(fake, http, fake.anon_key())
    with pytest.raises(APIError) as info:
        await anon.table("projects").insert({"title": "a"}).execute()
    assert (info.value.code, info.value.message) == (
        "42501",
        "permission denied for table projects",
    )
    r = await http.post("/projects", json={"title": "a"}, headers=_auth(fake, fake.anon_key()))
    assert r.status_code == 401
    user = fake.user_token(str(uuid.uuid4()))
    r = await http.post("/projects", json={"title": "a"}, headers=_auth(fake, user))
    assert (r.status_code, r.json()["code"]) == (403, "42501")
    assert _count(db_url, "projects") == 0


# --------------------------------------------------------------------------- upsert, update, delete


async def test_upsert_merges_or_ignores_duplicates(service: AsyncPostgrestClient) -> None:
    first = _data(await service.table("projects").insert({"title": "a"}).execute())[0]
    merged = await service.table("projects").upsert({"id": first["id"], "title": "b"}).execute()
    assert [(p["id"], p["title"]) for p in _data(merged)] == [(first["id"], "b")]
    ignored = await (
        service.table("projects")
        .upsert({"id": first["id"], "title": "c"}, ignore_duplicates=True)
        .execute()
    )
    assert _data(ignored) == []  # DO NOTHING returns no row
    fresh = (
        await service.table("projects")
        .upsert({"id": str(uuid.uuid4()), "title": "d"}, on_conflict="id")
        .execute()
    )
    assert [p["title"] for p in _data(fresh)] == ["d"]
    titles = await service.table("projects").select("title").order("title").execute()
    assert [p["title"] for p in _data(titles)] == ["b", "d"]


async def test_update_and_delete(
    service: AsyncPostgrestClient, http: httpx.AsyncClient, fake: PostgrestFake
) -> None:
    await service.table("projects").insert([{"title": t} for t in "abc"]).execute()
    res = (
        await service.table("projects").update({"progress": 50}).in_("title", ["a", "b"]).execute()
    )
    assert sorted((p["title"], p["progress"]) for p in _data(res)) == [("a", 50), ("b", 50)]
    r = await http.patch("/projects?title=eq.c", json={"progress": 7}, headers=_auth(fake))
    assert (r.status_code, r.content, r.headers["content-range"]) == (204, b"", "0-0/*")
    r = await http.patch("/projects?title=eq.zzz", json={"progress": 7}, headers=_auth(fake))
    assert (r.status_code, r.headers["content-range"]) == (204, "*/*")
    r = await http.patch("/projects?title=eq.c", json={"nope": 1}, headers=_auth(fake))
    assert r.json()["code"] == "PGRST204"
    gone = await service.table("projects").delete().eq("title", "a").execute()
    assert [p["title"] for p in _data(gone)] == ["a"]
    r = await http.delete("/projects?progress=lt.10", headers=_auth(fake))
    assert r.status_code == 204
    left = await service.table("projects").select("title").execute()
    assert [p["title"] for p in _data(left)] == ["b"]


# --------------------------------------------------------------------------- select


@pytest.fixture
async def five(service: AsyncPostgrestClient) -> list[dict[str, Any]]:
    """Five projects with progress 0, 20, 40, 60, 80 and a category on the odd ones."""
    rows = [
        {"title": f"app {i}", "progress": 20 * i, "category": "food" if i % 2 else None}
        for i in range(5)
    ]
    created: list[dict[str, Any]] = _data(await service.table("projects").insert(rows).execute())
    return created


async def test_select_filters_order_limit(
    service: AsyncPostgrestClient, five: list[dict[str, Any]]
) -> None:
    t = service.table
    res = await (
        t("projects")
        .select("title,progress")
        .gte("progress", 20)
        .order("progress", desc=True)
        .limit(2)
        .execute()
    )
    assert _data(res) == [{"title": "app 4", "progress": 80}, {"title": "app 3", "progress": 60}]
    res = await (
        t("projects")
        .select("title")
        .in_("title", ["app 1", "app 3", "x,y"])
        .order("title")
        .execute()
    )
    assert [p["title"] for p in _data(res)] == ["app 1", "app 3"]
    res = await t("projects").select("title").is_("category", "null").order("title").execute()
    assert [p["title"] for p in _data(res)] == ["app 0", "app 2", "app 4"]
    res = await t("projects").select("title").like("title", "%p 2").execute()
    assert [p["title"] for p in _data(res)] == ["app 2"]
    res = await t("projects").select("title").ilike("title", "APP 3").execute()
    assert [p["title"] for p in _data(res)] == ["app 3"]
    res = await (
        t("projects")
        .select("title")
        .or_("progress.eq.0,and(category.eq.food,progress.gt.50)")
        .order("title")
        .execute()
    )
    assert [p["title"] for p in _data(res)] == ["app 0", "app 3"]
    res = await (
        t("projects")
        .select("title")
        .neq("progress", 0)
        .order("progress")
        .offset(1)
        .limit(2)
        .execute()
    )
    assert [p["title"] for p in _data(res)] == ["app 2", "app 3"]
    res = await t("projects").select("name:title,progress::text").eq("progress", 40).execute()
    assert _data(res) == [{"name": "app 2", "progress": "40"}]
    res = await (
        t("projects")
        .select("title")
        .order("category", nullsfirst=True)
        .order("title", desc=True)
        .limit(2)
        .execute()
    )
    assert [p["title"] for p in _data(res)] == ["app 4", "app 2"]


async def test_select_count_and_content_range(
    service: AsyncPostgrestClient, http: httpx.AsyncClient, fake: PostgrestFake, five: list[Any]
) -> None:
    res = await service.table("projects").select("id", count=CountMethod.exact).limit(2).execute()
    assert (len(_data(res)), res.count) == (2, 5)
    r = await http.get(
        "/projects?select=id&offset=1&limit=2", headers={**_auth(fake), "Prefer": "count=exact"}
    )
    assert (r.status_code, r.headers["content-range"]) == (206, "1-2/5")
    r = await http.get("/projects?select=id", headers={**_auth(fake), "Range": "3-10"})
    assert (r.status_code, r.headers["content-range"], len(r.json())) == (200, "3-4/*", 2)
    r = await http.get("/projects?select=id&title=eq.none", headers=_auth(fake))
    assert (r.json(), r.headers["content-range"]) == ([], "*/*")


async def test_single_needs_exactly_one_row(
    service: AsyncPostgrestClient, http: httpx.AsyncClient, fake: PostgrestFake, five: list[Any]
) -> None:
    one = await service.table("projects").select("title").eq("progress", 40).single().execute()
    assert _data(one) == {"title": "app 2"}
    with pytest.raises(APIError) as info:
        await service.table("projects").select("*").eq("title", "none").single().execute()
    assert (info.value.code, info.value.details) == ("PGRST116", "The result contains 0 rows")
    assert (
        await service.table("projects").select("*").eq("title", "none").maybe_single().execute()
        is None
    )
    r = await http.get(
        "/projects", headers={**_auth(fake), "Accept": "application/vnd.pgrst.object+json"}
    )
    assert r.status_code == 406
    assert r.json()["message"] == "JSON object requested, multiple (or no) rows returned"
    # A write asking for one object but touching two is rolled back.
    singular = {**_auth(fake), "Accept": "application/vnd.pgrst.object+json"}
    r = await http.patch("/projects?progress=lt.30", json={"progress": 1}, headers=singular)
    assert (r.status_code, r.json()["details"]) == (406, "The result contains 2 rows")
    res = await (
        service.table("projects").select("progress").lt("progress", 30).order("progress").execute()
    )
    assert _data(res) == [{"progress": 0}, {"progress": 20}]


async def test_query_errors(http: httpx.AsyncClient, fake: PostgrestFake) -> None:
    cases = [
        ("/projects?select=nope", 400, "42703"),
        ("/projects?title=zz.a", 400, "PGRST100"),
        ("/projects?order=title.sideways", 400, "PGRST100"),
        ("/projects?limit=ten", 400, "PGRST100"),
        ("/projects?select=id,agent_runs(*)", 400, "PGRST100"),
        ("/projects?select=count()", 400, "PGRST123"),
        ("/projects?id=eq.not-a-uuid", 400, "22P02"),
        ("/rpc/nothing_here", 404, "PGRST202"),
    ]
    for path, status, code in cases:
        r = await http.get(path, headers=_auth(fake))
        assert (r.status_code, r.json()["code"]) == (status, code), (path, r.text)
    r = await http.get("/projects", headers={**_auth(fake), "Accept-Profile": "private"})
    assert (r.status_code, r.json()["code"]) == (406, "PGRST106")


# --------------------------------------------------------------------------- rpc, request settings


async def test_rpc_returns_the_function_result(service: AsyncPostgrestClient) -> None:
    project = _data(await service.table("projects").insert({"title": "a"}).execute())[0]
    res = await service.rpc("rollup_project", {"p_project_id": project["id"]}).execute()
    assert [(p["id"], p["status"]) for p in _data(res)] == [(project["id"], "spawning")]
    with pytest.raises(APIError) as info:
        await service.rpc("rollup_project", {"p_project_id": str(uuid.uuid4())}).execute()
    assert (info.value.code, sqlstate_status("P0002", authenticated=True)) == ("P0002", 500)
    with pytest.raises(APIError) as info:
        await service.rpc("rollup_project", {"wrong": "1"}).execute()
    assert info.value.code == "PGRST202"


async def test_requests_run_as_postgrest_sets_them_up(
    fake: PostgrestFake, http: httpx.AsyncClient, db_url: str
) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            """
            create function public.whoami(p_echo text default null) returns json
            language sql stable as $$
              select json_build_object(
                'user', current_user, 'uid', auth.uid(), 'role', auth.role(),
                'method', current_setting('request.method', true),
                'path', current_setting('request.path', true),
                'echo', p_echo,
                'header', current_setting('request.headers', true)::json ->> 'x-trace',
                'read_only', current_setting('transaction_read_only'))
            $$;
            grant execute on function public.whoami(text) to anon, authenticated, service_role;
            """
        )
    fake.reload_schema()
    sub = str(uuid.uuid4())
    user = _client(fake, http, fake.user_token(sub))
    res = await user.rpc("whoami", {"p_echo": "hi"}).execute()
    assert _data(res) == {
        "user": "authenticated",
        "uid": sub,
        "role": "authenticated",
        "method": "POST",
        "path": "/rpc/whoami",
        "echo": "hi",
        "header": None,
        "read_only": "on",
    }
    r = await http.get("/rpc/whoami", headers={**_auth(fake, fake.anon_key()), "X-Trace": "t1"})
    assert r.json() | {"uid": None} == {
        "user": "anon",
        "uid": None,
        "role": "anon",
        "method": "GET",
        "path": "/rpc/whoami",
        "echo": None,
        "header": "t1",
        "read_only": "on",
    }


async def test_supabase_create_client_talks_to_the_fake(
    fake: PostgrestFake, http: httpx.AsyncClient
) -> None:
    client = await acreate_client(
        BASE, fake.service_role_key(), options=AsyncClientOptions(httpx_client=http)
    )
    await client.table("projects").insert({"title": "from supabase-py"}).execute()
    res = await client.table("projects").select("title").execute()
    assert _data(res) == [{"title": "from supabase-py"}]


async def test_over_a_real_socket(fake: PostgrestFake) -> None:
    async with serve(fake.app) as base_url:
        key = fake.service_role_key()
        async with AsyncPostgrestClient(
            f"{base_url}/rest/v1",
            headers={
                "Accept": "application/json",
                "Content-Type": "application/json",
                "apikey": key,
                "Authorization": f"Bearer {key}",
            },
        ) as client:
            await client.table("projects").insert({"title": "over tcp"}).execute()
            res = await client.table("projects").select("title").execute()
    assert _data(res) == [{"title": "over tcp"}]


# --------------------------------------------------------------------------- switches


async def test_fault_switches(fake: PostgrestFake, http: httpx.AsyncClient, db_url: str) -> None:
    fake.fail_next(1, status=429, retry_after=1)
    r = await http.post("/projects", json={"title": "a"}, headers=_auth(fake))
    assert (r.status_code, r.headers["retry-after"], r.json()) == (
        429,
        "1",
        {"message": "API rate limit exceeded"},
    )
    fake.fail_next(1, status=502)
    r = await http.post("/projects", json={"title": "a"}, headers=_auth(fake))
    assert (r.status_code, r.headers["content-type"].split(";")[0]) == (502, "text/html")
    assert _count(db_url, "projects") == 0
    fake.fail_next(1, status=503, after_commit=True)
    r = await http.post("/projects", json={"title": "a"}, headers=_auth(fake))
    assert (r.status_code, r.json()["code"]) == (503, "PGRST001")
    assert _count(db_url, "projects") == 1
    assert fake.requests[("POST", "projects")] == 3
    assert (fake.failures_served, fake.pending_failures) == (3, 0)
    fake.latency(0.05)
    r = await http.get("/projects?select=id", headers=_auth(fake))
    assert r.elapsed.total_seconds() >= 0.05
    fake.latency(0)
