"""A wire-faithful PostgREST (v12/13 behaviour) as an ASGI app that executes on real PostgreSQL.

Nothing is emulated in memory: every request becomes one transaction on the database, made
the way PostgREST makes it (REFERENCE.md §3a, §3c). It logs in as `authenticator`, verifies the
JWT (HS256), switches to the JWT's role and sets the request settings transaction-locally:

    begin [read only];
    select set_config('search_path', '"public", "extensions"', true),
           set_config('role', <claims.role or anon>, true),
           set_config('request.jwt.claims', <claims json>, true),
           set_config('request.method', 'GET', true), set_config('request.path', '/t', true),
           set_config('request.headers', <lower-cased headers json>, true),
           set_config('request.cookies', <cookies json>, true);
    <one statement>; commit;

so grants, RLS policies, triggers, constraints and SQLSTATEs are the database's own. Errors
come back as `{"code", "message", "details", "hint"}` with PostgREST's SQLSTATE → HTTP map
(`sqlstate_status`); PostgREST's own errors use its PGRST codes.

Supported, under `/rest/v1/`:

    GET|HEAD /t      select= (columns, alias:col, col::cast, json paths a->b->>c, *),
                     filters col=[not.]op.value (eq neq gt gte lt lte like ilike match imatch
                     is isdistinct in cs cd ov fts plfts phfts wfts), or=(…)/and=(…) trees,
                     order=col.asc|desc[.nullsfirst|nullslast],…, limit, offset, Range,
                     Prefer: count=exact|planned|estimated (Content-Range, 206)
    POST /t          object or array (one INSERT for the batch; uniform keys, else PGRST102),
                     ?columns=, ?on_conflict=, Prefer: return=minimal|representation|
                     headers-only, resolution=merge-duplicates|ignore-duplicates, missing=default
    PATCH /t?f       update matching rows (204, or 200 with return=representation)
    DELETE /t?f      delete matching rows (204, or 200 with return=representation)
    POST /rpc/fn     named arguments as a JSON object (GET /rpc/fn?arg=v read-only); a set of
                     rows → array, one row → object, scalar → the value, void → 204
    Accept: application/vnd.pgrst.object+json → one object, or 406 PGRST116 (rolled back)

Not supported (answered 400 PGRST100 saying so): resource embedding, aggregates (PGRST123, as
on Supabase where they are disabled), limit/offset on PATCH/DELETE, PUT. Ignored: Prefer
handling=, tx=, max-affected=, timezone=.

The gateway in front of PostgREST (Kong on Supabase) is modelled only as far as clients see
it: an `apikey` header (or query parameter) signed with the project's secret is required,
else 401 `{"message": "No API key found in request"}` / `"Invalid API key"`.

Switches for tests and benchmarks:

    fake.fail_next(n, 503, retry_after=None)    the next n requests fail before the database:
                                                429 → the gateway's {"message": "API rate limit
                                                exceeded"}, 503 → PGRST001, 504 → PGRST003,
                                                other 5xx → a proxy's HTML page
    fake.fail_next(n, 503, after_commit=True)   …or run and commit, then fail (a lost answer)
    fake.latency(seconds)                       delay every request
    fake.requests[("POST", "project_logs")]     requests seen, per (method, table | rpc/<fn>)
    fake.history                                the last requests (method, path, query, Prefer)
    fake.failures_served, fake.pending_failures injected failures answered / still armed
    fake.reload_schema()                        re-read the catalog on the next request

The fake is an ASGI app (`fake` or `fake.app`). Use it in-process with
`httpx.AsyncClient(transport=fake.transport(), base_url=…)`, or over a real socket with
`async with serve(fake.app) as base_url` (tests.fakes.github.serve: uvicorn on loopback).
Mint keys with `fake.service_role_key()`, `fake.anon_key()`, `fake.user_token(sub)`.
`await fake.close()` closes its connection pool.
"""

from __future__ import annotations

import asyncio
import difflib
import json
import re
import time
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any, Literal

import httpx
import jwt
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

DEFAULT_JWT_SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"
"""The secret `supabase start` uses locally; 32+ bytes, as HS256 wants."""

PREFIX = "/rest/v1"
SINGULAR = "application/vnd.pgrst.object+json"
_JSON_TYPES = frozenset({"application/json", "application/*", "*/*"})
_RESERVED = frozenset(
    {
        "select",
        "columns",
        "on_conflict",
        "order",
        "limit",
        "offset",
        "and",
        "or",
        "not.and",
        "not.or",
    }
)
_OPERATORS = {
    "eq": "=", "neq": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<=",
    "like": "LIKE", "ilike": "ILIKE", "match": "~", "imatch": "~*",
    "cs": "@>", "cd": "<@", "ov": "&&",
}  # fmt: skip
_FTS = {
    "fts": "to_tsquery", "plfts": "plainto_tsquery", "phfts": "phraseto_tsquery",
    "wfts": "websearch_to_tsquery",
}  # fmt: skip
_IS_VALUES = {
    "null": "NULL",
    "not_null": "NOT NULL",
    "true": "TRUE",
    "false": "FALSE",
    "unknown": "UNKNOWN",
}
_CAST = re.compile(r"^[A-Za-z_][A-Za-z0-9_ ]*(\[\])?$")
_FTS_CONFIG = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_AGGREGATE = re.compile(r"(^|\.)(count|sum|avg|min|max)\(\)")
_RANGE = re.compile(r"^(\d+)-(\d*)$")

#: PostgREST's SQLSTATE → HTTP status map (docs "Errors"); anything else is 400.
_STATUS_EXACT = {
    "23503": 409, "23505": 409, "25006": 405, "P0001": 400, "42883": 404, "42P01": 404,
    "42P17": 500, "53400": 500,
}  # fmt: skip
_STATUS_CLASS = {
    "08": 503, "09": 500, "0L": 403, "0P": 403, "25": 500, "28": 403, "2D": 500, "38": 500,
    "39": 500, "3B": 500, "40": 500, "53": 503, "54": 500, "55": 500, "57": 500, "58": 500,
    "F0": 500, "HV": 500, "P0": 500, "XX": 500,
}  # fmt: skip


def sqlstate_status(code: str, *, authenticated: bool) -> int:
    """The HTTP status PostgREST answers a PostgreSQL error with.

    42501 (insufficient privilege, including an RLS WITH CHECK failure) is 403 when the
    request's role is not the anon role and 401 when it is (an anon key is a JWT too);
    `PTnnn` codes raised by functions choose their status themselves.
    """
    if code == "42501":
        return 403 if authenticated else 401
    if code in _STATUS_EXACT:
        return _STATUS_EXACT[code]
    if code.startswith("PT") and code[2:].isdigit():
        return int(code[2:])
    return _STATUS_CLASS.get(code[:2], 400)


def sign_jwt(secret: str, claims: Mapping[str, Any], *, expires_in: float | None = 3600) -> str:
    """An HS256 JWT with `claims`, expiring in `expires_in` seconds (negative: already expired)."""
    payload = dict(claims)
    now = int(time.time())
    payload.setdefault("iat", now if expires_in is None or expires_in > 0 else now - 7200)
    if expires_in is not None:
        payload.setdefault("exp", now + int(expires_in))
    return jwt.encode(payload, secret, algorithm="HS256")


# --------------------------------------------------------------------------- errors


class PgrstError(Exception):
    """An error answered with PostgREST's body shape."""

    def __init__(
        self,
        status: int,
        code: str | None,
        message: str,
        details: str | None = None,
        hint: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.hint = hint
        self.headers = dict(headers or {})

    def response(self) -> Response:
        """The HTTP answer."""
        body = {
            "code": self.code,
            "details": self.details,
            "hint": self.hint,
            "message": self.message,
        }
        return _json(self.status, json.dumps(body), headers=self.headers)


class GatewayError(PgrstError):
    """An error from the API gateway in front of PostgREST (Kong): `{"message", "hint"}` only."""

    def response(self) -> Response:
        """The HTTP answer."""
        return _json(self.status, json.dumps({"message": self.message, "hint": self.hint}))


def _bad_query(message: str, details: str | None = None) -> PgrstError:
    return PgrstError(400, "PGRST100", message, details)


def _unsupported(what: str) -> PgrstError:
    return _bad_query(f"{what} is not supported by the PostgREST fake")


def _from_pg(err: psycopg.Error, *, authenticated: bool) -> PgrstError:
    code = err.sqlstate
    if code is None and isinstance(err, psycopg.DataError):
        # psycopg refuses a NUL before sending; the server would have said this.
        return PgrstError(400, "22021", 'invalid byte sequence for encoding "UTF8": 0x00')
    if code is None:  # the connection broke: PostgREST reports and reconnects
        return PgrstError(
            503, "PGRST001", "Database client error. Retrying the connection.", str(err)
        )
    diag = err.diag
    status = sqlstate_status(code, authenticated=authenticated)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return PgrstError(
        status,
        code,
        diag.message_primary or str(err),
        diag.message_detail,
        diag.message_hint,
        headers=headers,
    )


def _json(
    status: int,
    body: str | None,
    *,
    singular: bool = False,
    headers: Mapping[str, str] | None = None,
) -> Response:
    media = SINGULAR if singular else "application/json"
    response = Response(
        content=b"" if body is None else body.encode(), status_code=status, headers=headers
    )
    if body is not None:
        response.headers["content-type"] = f"{media}; charset=utf-8"
    return response


# --------------------------------------------------------------------------- schema cache


@dataclass(frozen=True, slots=True)
class Column:
    """A column of a table or view."""

    name: str
    type: str
    default: str | None


@dataclass(frozen=True, slots=True)
class Table:
    """A table or view of the exposed schema."""

    name: str
    columns: dict[str, Column]
    pk: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Param:
    """An input parameter of a function."""

    name: str
    type: str
    has_default: bool


@dataclass(frozen=True, slots=True)
class Routine:
    """A function of the exposed schema."""

    name: str
    params: tuple[Param, ...]
    returns_set: bool
    returns: Literal["composite", "scalar", "void"]
    volatility: str


@dataclass(frozen=True, slots=True)
class SchemaCache:
    """What PostgREST reads from the catalog at startup (and on reload)."""

    tables: dict[str, Table]
    routines: dict[str, tuple[Routine, ...]]


_TABLES_SQL = """
select c.relname,
  coalesce((select json_agg(json_build_object(
      'name', a.attname, 'type', format_type(a.atttypid, a.atttypmod),
      'default', case when a.attgenerated = '' then pg_get_expr(d.adbin, d.adrelid) end)
      order by a.attnum)
    from pg_attribute a
    left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
    where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped), '[]'),
  coalesce((select json_agg(a.attname order by array_position(i.indkey::int2[], a.attnum))
    from pg_index i join pg_attribute a on a.attrelid = i.indrelid and a.attnum = any(i.indkey)
    where i.indrelid = c.oid and i.indisprimary), '[]')
from pg_class c join pg_namespace n on n.oid = c.relnamespace
where n.nspname = %(schema)s and c.relkind in ('r', 'v', 'm', 'f', 'p')
"""
_ROUTINES_SQL = """
select p.proname, p.proretset, p.provolatile, t.typtype, t.typname, p.pronargdefaults,
  coalesce((select json_agg(json_build_object(
      'name', coalesce(p.proargnames[a.ord], ''), 'type', format_type(a.typ, null),
      'mode', coalesce(p.proargmodes[a.ord], 'i')) order by a.ord)
    from unnest(coalesce(p.proallargtypes, p.proargtypes::oid[])) with ordinality a(typ, ord)),
    '[]')
from pg_proc p
join pg_namespace n on n.oid = p.pronamespace
join pg_type t on t.oid = p.prorettype
where n.nspname = %(schema)s and p.prokind = 'f'
"""


async def _load_schema(conn: psycopg.AsyncConnection[Any], schema: str) -> SchemaCache:
    tables: dict[str, Table] = {}
    cur = await conn.execute(_TABLES_SQL, {"schema": schema})
    for name, columns, pk in await cur.fetchall():
        cols = {c["name"]: Column(c["name"], c["type"], c["default"]) for c in columns}
        tables[name] = Table(name, cols, tuple(pk))
    routines: dict[str, list[Routine]] = {}
    cur = await conn.execute(_ROUTINES_SQL, {"schema": schema})
    for name, retset, volatility, typtype, typname, ndefaults, args in await cur.fetchall():
        if typtype == "c" or (typtype == "p" and typname == "record"):
            returns: Literal["composite", "scalar", "void"] = "composite"
        elif typtype == "p" and typname == "void":
            returns = "void"
        elif typtype == "p":
            continue  # triggers, handlers: not callable over HTTP
        else:
            returns = "scalar"
        inputs = [a for a in args if a["mode"] in ("i", "b", "v")]
        first_default = len(inputs) - ndefaults
        params = tuple(
            Param(a["name"], a["type"], i >= first_default) for i, a in enumerate(inputs)
        )
        routines.setdefault(name, []).append(Routine(name, params, retset, returns, volatility))
    return SchemaCache(tables, {k: tuple(v) for k, v in routines.items()})


# --------------------------------------------------------------------------- the query language


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    path: tuple[tuple[str, str], ...] = ()
    """JSON path steps: (`->` or `->>`, key)."""


@dataclass(frozen=True, slots=True)
class _SelectItem:
    field: _Field | None  # None: `*`
    alias: str | None = None
    cast: str | None = None


@dataclass(frozen=True, slots=True)
class _Filter:
    field: _Field
    negate: bool
    op: str
    value: Any  # str, or a tuple of str for `in`
    language: str | None = None


@dataclass(frozen=True, slots=True)
class _Logic:
    op: Literal["and", "or"]
    negate: bool
    children: tuple[_Filter | _Logic, ...]


@dataclass(frozen=True, slots=True)
class _Order:
    field: _Field
    desc: bool
    nulls: str | None


@dataclass
class _Query:
    select: list[_SelectItem] = field(default_factory=lambda: [_SelectItem(None)])
    where: list[_Filter | _Logic] = field(default_factory=list)
    order: list[_Order] = field(default_factory=list)
    limit: int | None = None
    offset: int = 0
    columns: list[str] | None = None
    on_conflict: list[str] | None = None
    args: dict[str, str] = field(default_factory=dict)


def _split_top(text: str, sep: str = ",") -> list[str]:
    """Split on `sep` outside double quotes and parentheses."""
    parts: list[str] = []
    depth = 0
    quoted = False
    escaped = False
    current: list[str] = []
    for ch in text:
        if escaped:
            escaped = False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")":
            depth -= 1
        elif not quoted and depth == 0 and ch == sep:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    if quoted or depth != 0:
        raise _bad_query(f'"failed to parse ({text})"', "unbalanced quotes or parentheses")
    parts.append("".join(current))
    return parts


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return re.sub(r"\\(.)", r"\1", text[1:-1])
    return text


def _parse_field(text: str) -> _Field:
    pieces = re.split(r"(->>|->)", text.strip())
    name = _unquote(pieces[0])
    if not name:
        raise _bad_query(f'"failed to parse field ({text})"', "a column name is required")
    steps = tuple((pieces[i], _unquote(pieces[i + 1])) for i in range(1, len(pieces) - 1, 2))
    if any(not key for _, key in steps):
        raise _bad_query(f'"failed to parse field ({text})"', "empty json path key")
    return _Field(name, steps)


def _parse_select(raw: str) -> list[_SelectItem]:
    items: list[_SelectItem] = []
    for part in _split_top(raw):
        part = part.strip()
        if not part:
            continue
        if _AGGREGATE.search(part):
            raise PgrstError(400, "PGRST123", "Use of aggregate functions is not allowed")
        if "(" in part or part.startswith("..."):
            raise _unsupported("resource embedding")
        if part == "*":
            items.append(_SelectItem(None))
            continue
        cast = None
        if "::" in part:
            part, cast = part.rsplit("::", 1)
            if not _CAST.match(cast):
                raise _bad_query(f'"failed to parse select parameter ({raw})"', f"bad cast {cast}")
        alias = None
        head, sep, rest = part.partition(":")
        if sep and not head.startswith('"'):
            alias, part = _unquote(head), rest
        items.append(_SelectItem(_parse_field(part), alias, cast))
    return items or [_SelectItem(None)]


def _parse_operation(fld: _Field, text: str, *, in_tree: bool) -> _Filter:
    negate = False
    if text.startswith("not."):
        negate, text = True, text[4:]
    op, dot, value = text.partition(".")
    language = None
    fts = re.match(r"^(fts|plfts|phfts|wfts)\((.+)\)$", op)
    if fts:
        op, language = fts.group(1), fts.group(2)
        if not _FTS_CONFIG.match(language):
            raise _bad_query(
                f'"failed to parse filter ({text})"', f"bad text search config {language}"
            )
    if not dot or (
        op not in _OPERATORS and op not in _FTS and op not in ("is", "in", "isdistinct")
    ):
        raise _bad_query(
            f'"failed to parse filter ({text})"',
            'unexpected operator: expected "not" or one of eq, neq, gt, gte, lt, lte, like, '
            "ilike, match, imatch, is, isdistinct, in, cs, cd, ov, fts, plfts, phfts, wfts",
        )
    if op == "is":
        if value.lower() not in _IS_VALUES:
            raise _bad_query(
                f'"failed to parse filter ({text})"',
                "is accepts null, not_null, true, false or unknown",
            )
        return _Filter(fld, negate, op, value.lower())
    if op == "in":
        if not (value.startswith("(") and value.endswith(")")):
            raise _bad_query(f'"failed to parse filter ({text})"', "in needs a list: in.(a,b)")
        inner = value[1:-1]
        values = () if inner.strip() == "" else tuple(_unquote(v) for v in _split_top(inner))
        return _Filter(fld, negate, op, values)
    if in_tree:
        value = _unquote(value)
    if op in ("like", "ilike"):
        value = value.replace("*", "%")
    return _Filter(fld, negate, op, value, language)


def _parse_tree(op: Literal["and", "or"], negate: bool, raw: str) -> _Logic:
    raw = raw.strip()
    if not (raw.startswith("(") and raw.endswith(")")):
        raise _bad_query(f'"failed to parse logic tree ({raw})"', "expected (…)")
    children: list[_Filter | _Logic] = []
    for item in _split_top(raw[1:-1]):
        item = item.strip()
        sub = re.match(r"^(not\.)?(and|or)(\(.*\))$", item, re.S)
        if sub:
            kind: Literal["and", "or"] = "and" if sub.group(2) == "and" else "or"
            children.append(_parse_tree(kind, bool(sub.group(1)), sub.group(3)))
            continue
        if item.startswith('"'):
            end = item.find('"', 1)
            name, rest = item[: end + 1], item[end + 2 :]
        else:
            name, _, rest = item.partition(".")
        children.append(_parse_operation(_parse_field(name), rest, in_tree=True))
    return _Logic(op, negate, tuple(children))


def _parse_order(raw: str) -> list[_Order]:
    terms: list[_Order] = []
    for part in _split_top(raw):
        pieces = part.strip().split(".")
        fld = _parse_field(pieces[0])
        desc = False
        nulls = None
        for modifier in pieces[1:]:
            if modifier in ("asc", "desc"):
                desc = modifier == "desc"
            elif modifier in ("nullsfirst", "nullslast"):
                nulls = "FIRST" if modifier == "nullsfirst" else "LAST"
            else:
                raise _bad_query(
                    f'"failed to parse order ({raw})"',
                    f"unexpected {modifier!r}: expected asc, desc, nullsfirst or nullslast",
                )
        terms.append(_Order(fld, desc, nulls))
    return terms


def _parse_int(name: str, raw: str) -> int:
    if not raw.isdigit():
        raise _bad_query(
            f'"failed to parse {name} parameter ({raw})"', "expected a non-negative integer"
        )
    return int(raw)


def _parse_names(raw: str) -> list[str]:
    names = [_unquote(n) for n in _split_top(raw)]
    if any(not n for n in names):
        raise _bad_query(f'"failed to parse columns parameter ({raw})"')
    return names


def _parse_query(
    items: Iterable[tuple[str, str]], *, arg_names: frozenset[str] = frozenset()
) -> _Query:
    q = _Query()
    for key, value in items:
        if key == "select":
            q.select = _parse_select(value)
        elif key == "order":
            q.order = _parse_order(value)
        elif key == "limit":
            q.limit = _parse_int("limit", value)
        elif key == "offset":
            q.offset = _parse_int("offset", value)
        elif key == "columns":
            q.columns = _parse_names(value)
        elif key == "on_conflict":
            q.on_conflict = _parse_names(value)
        elif key in ("and", "or", "not.and", "not.or"):
            negate = key.startswith("not.")
            q.where.append(_parse_tree("and" if key.endswith("and") else "or", negate, value))
        elif key in arg_names:
            q.args[key] = value
        elif key == "apikey":
            continue  # the gateway's, not a filter
        else:
            if "." in key and not key.startswith('"'):
                raise _unsupported(f"filtering an embedded resource ({key})")
            q.where.append(_parse_operation(_parse_field(key), value, in_tree=False))
    return q


# --------------------------------------------------------------------------- SQL from the query


def _field_sql(fld: _Field, qual: Sequence[str]) -> sql.Composable:
    out: sql.Composable = sql.Identifier(*qual, fld.name)
    for arrow, key in fld.path:
        step = sql.Literal(int(key)) if re.fullmatch(r"-?\d+", key) else sql.Literal(key)
        out = sql.SQL("({} {} {})").format(out, sql.SQL(arrow), step)
    return out


def _filter_sql(f: _Filter | _Logic, qual: Sequence[str]) -> sql.Composable:
    if isinstance(f, _Logic):
        glue = sql.SQL(" AND " if f.op == "and" else " OR ")
        inner: sql.Composable = (
            sql.SQL("({})").format(glue.join(_filter_sql(c, qual) for c in f.children))
            if f.children
            else sql.SQL("TRUE")
        )
    else:
        col = _field_sql(f.field, qual)
        if f.op == "is":
            inner = sql.SQL("{} IS {}").format(col, sql.SQL(_IS_VALUES[f.value]))
        elif f.op == "isdistinct":
            inner = sql.SQL("{} IS DISTINCT FROM {}").format(col, sql.Literal(f.value))
        elif f.op == "in":
            inner = (
                sql.SQL("{} IN ({})").format(col, sql.SQL(", ").join(map(sql.Literal, f.value)))
                if f.value
                else sql.SQL("FALSE")
            )
        elif f.op in _FTS:
            fn = sql.SQL(_FTS[f.op])
            query = (
                sql.SQL("{}({}, {})").format(fn, sql.Literal(f.language), sql.Literal(f.value))
                if f.language
                else sql.SQL("{}({})").format(fn, sql.Literal(f.value))
            )
            inner = sql.SQL("{} @@ {}").format(col, query)
        else:
            inner = sql.SQL("{} {} {}").format(col, sql.SQL(_OPERATORS[f.op]), sql.Literal(f.value))
    return sql.SQL("NOT ({})").format(inner) if f.negate else inner


def _where_sql(where: Sequence[_Filter | _Logic], qual: Sequence[str]) -> sql.Composable:
    if not where:
        return sql.SQL("")
    return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(_filter_sql(f, qual) for f in where)


def _order_sql(order: Sequence[_Order], qual: Sequence[str]) -> sql.Composable:
    if not order:
        return sql.SQL("")
    terms = [
        sql.SQL("{} {}{}").format(
            _field_sql(o.field, qual),
            sql.SQL("DESC" if o.desc else "ASC"),
            sql.SQL(f" NULLS {o.nulls}" if o.nulls else ""),
        )
        for o in order
    ]
    return sql.SQL(" ORDER BY ") + sql.SQL(", ").join(terms)


def _select_sql(items: Sequence[_SelectItem], qual: Sequence[str]) -> sql.Composable:
    parts: list[sql.Composable] = []
    for item in items:
        if item.field is None:
            parts.append(sql.SQL("{}.*").format(sql.Identifier(*qual)))
            continue
        expr = _field_sql(item.field, qual)
        if item.cast:
            expr = sql.SQL("CAST({} AS {})").format(expr, sql.SQL(item.cast))
        alias = item.alias or (item.field.path[-1][1] if item.field.path else item.field.name)
        parts.append(sql.SQL("{} AS {}").format(expr, sql.Identifier(alias)))
    return sql.SQL(", ").join(parts)


def _limit_sql(limit: int | None, offset: int) -> sql.Composable:
    out: sql.Composable = sql.SQL("")
    if limit is not None:
        out += sql.SQL(" LIMIT {}").format(sql.Literal(limit))
    if offset:
        out += sql.SQL(" OFFSET {}").format(sql.Literal(offset))
    return out


# --------------------------------------------------------------------------- the fake


@dataclass(frozen=True, slots=True)
class _Fault:
    status: int
    retry_after: float | None
    after_commit: bool


@dataclass(frozen=True, slots=True)
class SeenRequest:
    """One request the fake received (credentials left out)."""

    method: str
    path: str
    query: str
    prefer: str | None


@dataclass
class _Auth:
    claims: dict[str, Any]
    role: str
    authenticated: bool
    """Not the anon role: decides 403 (authenticated) or 401 for a permission error."""


@dataclass
class _Outcome:
    status: int
    body: str | None
    headers: dict[str, str] = field(default_factory=dict)
    singular: bool = False


class PostgrestFake:
    """PostgREST in front of a real database; see the module docstring."""

    def __init__(
        self,
        db_url: str,
        jwt_secret: str = DEFAULT_JWT_SECRET,
        *,
        schema: str = "public",
        extra_search_path: Sequence[str] = ("extensions",),
        anon_role: str = "anon",
        pool_size: int = 8,
        pool_timeout: float = 10.0,
        history: int = 1000,
    ) -> None:
        # PostgREST logs in as `authenticator` (NOINHERIT) and switches role per request.
        self._conninfo = make_conninfo(db_url, user="authenticator")
        self._secret = jwt_secret
        self._schema = schema
        self._search_path = ", ".join(
            sql.Identifier(s).as_string() for s in (schema, *extra_search_path)
        )
        self._anon_role = anon_role
        self._pool_size = pool_size
        self._pool_timeout = pool_timeout
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] | None = None
        self._pool_lock = asyncio.Lock()
        self._cache: SchemaCache | None = None
        self._faults: deque[_Fault] = deque()
        self._latency = 0.0
        self.requests: Counter[tuple[str, str]] = Counter()
        """Requests received, per (method, table or `rpc/<function>`)."""
        self.history: deque[SeenRequest] = deque(maxlen=history)
        """The last requests received, newest last."""
        self.failures_served = 0
        """Injected failures answered so far."""
        self.app = Starlette(
            routes=[
                Route(
                    PREFIX + "/{path:path}",
                    self._endpoint,
                    methods=["GET", "HEAD", "POST", "PATCH", "DELETE", "PUT", "OPTIONS"],
                )
            ]
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)

    def transport(self) -> httpx.ASGITransport:
        """An httpx transport that calls this app in-process."""
        return httpx.ASGITransport(app=self.app)

    # keys ----------------------------------------------------------------------------------

    def sign(self, claims: Mapping[str, Any], *, expires_in: float | None = 3600) -> str:
        """A JWT signed with this fake's secret."""
        return sign_jwt(self._secret, claims, expires_in=expires_in)

    def service_role_key(self) -> str:
        """A service-role key, as Supabase issues it (role claim `service_role`)."""
        return self.sign({"iss": "supabase", "role": "service_role"}, expires_in=10 * 365 * 86400)

    def anon_key(self) -> str:
        """An anon key (role claim `anon`)."""
        return self.sign({"iss": "supabase", "role": "anon"}, expires_in=10 * 365 * 86400)

    def user_token(self, sub: str, *, expires_in: float = 3600) -> str:
        """A signed-in user's access token (role `authenticated`, `sub` = the user id)."""
        return self.sign(
            {"sub": sub, "role": "authenticated", "aud": "authenticated"}, expires_in=expires_in
        )

    # switches ------------------------------------------------------------------------------

    def fail_next(
        self,
        n: int = 1,
        status: int = 503,
        retry_after: float | None = None,
        *,
        after_commit: bool = False,
    ) -> None:
        """Answer the next `n` requests with `status` (and `Retry-After` when given).

        With `after_commit`, each request first runs and commits, and only its answer is
        replaced — a lost acknowledgement, as after a proxy timeout.
        """
        self._faults.extend(_Fault(status, retry_after, after_commit) for _ in range(n))

    @property
    def pending_failures(self) -> int:
        """Injected failures not served yet."""
        return len(self._faults)

    def latency(self, seconds: float) -> None:
        """Delay every later request by `seconds` (0 to stop)."""
        self._latency = max(0.0, seconds)

    def reload_schema(self) -> None:
        """Re-read tables and functions on the next request (PostgREST's `NOTIFY pgrst`)."""
        self._cache = None

    async def close(self) -> None:
        """Close the connection pool."""
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    # the request ---------------------------------------------------------------------------

    async def _endpoint(self, request: Request) -> Response:
        path = request.path_params["path"].strip("/")
        self.requests[(request.method, path)] += 1
        self.history.append(
            SeenRequest(request.method, path, request.url.query, request.headers.get("prefer"))
        )
        if self._latency:
            await asyncio.sleep(self._latency)
        fault = self._faults.popleft() if self._faults else None
        if fault is not None and not fault.after_commit:
            return self._fault_response(fault)
        try:
            self._check_apikey(request)
            response = await self._serve(request, path)
        except PgrstError as err:
            response = err.response()
        if fault is not None:
            return self._fault_response(fault)
        return response

    def _fault_response(self, fault: _Fault) -> Response:
        self.failures_served += 1
        headers: dict[str, str] = {}
        if fault.retry_after is not None:
            # Real servers send whole seconds; fractions keep tests fast (and parse the same).
            headers["Retry-After"] = format(fault.retry_after, "g")
        if fault.status == 429:
            return _json(429, json.dumps({"message": "API rate limit exceeded"}), headers=headers)
        if fault.status == 503:
            return PgrstError(
                503,
                "PGRST001",
                "Database client error. Retrying the connection.",
                "connection to server failed (injected)",
                headers=headers,
            ).response()
        if fault.status == 504:
            return PgrstError(
                504,
                "PGRST003",
                "Timed out acquiring connection from connection pool.",
                headers=headers,
            ).response()
        if fault.status >= 500:  # what a proxy in front answers: not PostgREST's JSON
            title = f"<head><title>{fault.status}</title></head>"
            page = f"<html>{title}<body>upstream error</body></html>"
            return Response(page, status_code=fault.status, headers=headers, media_type="text/html")
        return PgrstError(fault.status, None, "injected failure", headers=headers).response()

    def _check_apikey(self, request: Request) -> None:
        key = request.headers.get("apikey") or request.query_params.get("apikey")
        if not key:
            raise GatewayError(
                401,
                None,
                "No API key found in request",
                hint="No `apikey` request header or url param was found.",
            )
        try:
            jwt.decode(
                key,
                self._secret,
                algorithms=["HS256"],
                options={"verify_exp": False, "verify_aud": False},
            )
        except jwt.InvalidTokenError:
            raise GatewayError(
                401,
                None,
                "Invalid API key",
                hint="Double check your Supabase `anon` or `service_role` API key.",
            ) from None

    def _authenticate(self, request: Request) -> _Auth:
        header = request.headers.get("authorization")
        scheme, _, token = (header or "").partition(" ")
        if header is None or scheme.lower() != "bearer":
            return _Auth({"role": self._anon_role}, self._anon_role, False)
        token = token.strip()

        def invalid(message: str) -> PgrstError:
            challenge = f'Bearer error="invalid_token", error_description="{message}"'
            return PgrstError(401, "PGRST301", message, headers={"WWW-Authenticate": challenge})

        if not token:
            raise invalid("Empty JWT is sent in Authorization header")
        try:
            claims = jwt.decode(
                token, self._secret, algorithms=["HS256"], leeway=30, options={"verify_aud": False}
            )
        except jwt.ExpiredSignatureError:
            raise invalid("JWT expired") from None
        except jwt.InvalidSignatureError:
            raise invalid("JWSError JWSInvalidSignature") from None
        except jwt.DecodeError:
            parts = token.count(".") + 1
            if parts != 3:
                raise invalid(
                    "JWSError (CompactDecodeError Invalid number of parts:"
                    f" Expected 3 parts; got {parts})"
                ) from None
            raise invalid("JWSError JWSInvalidSignature") from None
        except jwt.InvalidTokenError as err:
            raise invalid(f"JWT invalid: {err}") from None
        role = claims.get("role", self._anon_role)
        if not isinstance(role, str) or not role:
            raise PgrstError(401, "PGRST303", "JWT claims validation or parsing failed")
        # PostgREST's "authenticated" is "not the anon role", whatever the token.
        return _Auth(claims, role, role != self._anon_role)

    async def _pool_ready(self) -> AsyncConnectionPool[psycopg.AsyncConnection[Any]]:
        async with self._pool_lock:
            if self._pool is None:
                pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
                    self._conninfo,
                    min_size=1,
                    max_size=self._pool_size,
                    open=False,
                    timeout=self._pool_timeout,
                    kwargs={"autocommit": True},
                )
                try:
                    await pool.open(wait=True, timeout=self._pool_timeout)
                except PoolTimeout:
                    await pool.close()
                    raise PgrstError(
                        503,
                        "PGRST000",
                        "Could not connect with the database due "
                        "to an incorrect db-uri or due to the PostgreSQL service "
                        "not running.",
                    ) from None
                self._pool = pool
            return self._pool

    async def _serve(self, request: Request, path: str) -> Response:
        method = request.method
        if method == "OPTIONS":
            return Response(
                status_code=200, headers={"Allow": "OPTIONS,GET,HEAD,POST,PATCH,DELETE"}
            )
        reading = method in ("GET", "HEAD")
        profile = request.headers.get("accept-profile" if reading else "content-profile")
        if profile is not None and profile != self._schema:
            raise PgrstError(
                406, "PGRST106", f"The schema must be one of the following: {self._schema}"
            )
        singular = _wants_singular(request.headers.get("accept"))
        auth = self._authenticate(request)
        prefer = _parse_prefer(request.headers.get("prefer"))
        body = await request.body()
        pool = await self._pool_ready()
        try:
            async with pool.connection() as conn:
                if self._cache is None:
                    self._cache = await _load_schema(conn, self._schema)
                outcome = await self._run(conn, request, path, auth, prefer, body, singular)
        except psycopg.Error as err:
            raise _from_pg(err, authenticated=auth.authenticated) from None
        except PoolTimeout:
            raise PgrstError(
                504, "PGRST003", "Timed out acquiring connection from connection pool."
            ) from None
        if method == "HEAD":
            outcome.body = None
        return _json(
            outcome.status, outcome.body, singular=outcome.singular, headers=outcome.headers
        )

    async def _run(
        self,
        conn: psycopg.AsyncConnection[Any],
        request: Request,
        path: str,
        auth: _Auth,
        prefer: dict[str, str],
        body: bytes,
        singular: bool,
    ) -> _Outcome:
        assert self._cache is not None
        method = request.method
        items = request.query_params.multi_items()
        if path.startswith("rpc/"):
            routine, args = self._resolve(path[4:], method, items, body)
            query = _parse_query(
                items,
                arg_names=frozenset(p.name for p in routine.params)
                if method in ("GET", "HEAD")
                else frozenset(),
            )
            read_only = method in ("GET", "HEAD") or routine.volatility in ("s", "i")
            statement = _call_sql(routine, self._schema, args, query, singular)
            plan = _Plan(statement, read_only, "rpc", routine=routine)
        else:
            table = self._cache.tables.get(path)
            if table is None:
                raise PgrstError(
                    404,
                    "PGRST205",
                    f"Could not find the table '{self._schema}.{path}' in the schema cache",
                    hint=_suggest(path, self._cache.tables, self._schema, "table"),
                )
            query = _parse_query(items)
            plan = self._table_plan(method, table, query, prefer, body, request, singular)
        async with conn.transaction():
            if plan.read_only:
                await conn.execute("set transaction isolation level read committed read only")
            await conn.execute(self._settings_sql(request, auth))
            outcome = await plan.execute(conn, query, prefer, singular, self._schema)
            if outcome.status == 406:
                raise psycopg.Rollback()  # a singular violation writes nothing
        return outcome

    def _settings_sql(self, request: Request, auth: _Auth) -> sql.Composed:
        headers = {k.lower(): v for k, v in request.headers.items()}
        cookie = SimpleCookie()
        cookie.load(request.headers.get("cookie", ""))
        cookies = {k: m.value for k, m in cookie.items()}
        path = "/" + request.path_params["path"].strip("/")
        settings = [
            ("search_path", self._search_path),
            ("role", auth.role),
            ("request.jwt.claims", json.dumps(auth.claims)),
            ("request.method", request.method),
            ("request.path", path),
            ("request.headers", json.dumps(headers)),
            ("request.cookies", json.dumps(cookies)),
        ]
        return sql.SQL("select ") + sql.SQL(", ").join(
            sql.SQL("set_config({}, {}, true)").format(sql.Literal(k), sql.Literal(v))
            for k, v in settings
        )

    def _resolve(
        self, name: str, method: str, items: list[tuple[str, str]], body: bytes
    ) -> tuple[Routine, dict[str, Any] | str]:
        assert self._cache is not None
        if method in ("GET", "HEAD"):
            keys = {k for k, _ in items if k not in _RESERVED}
            candidates = self._cache.routines.get(name, ())
            # Query parameters that name an argument are arguments; the rest filter the result.
            names = {p.name for r in candidates for p in r.params}
            args: dict[str, Any] | str = {k: v for k, v in items if k in names}
            keys &= names
        elif method == "POST":
            try:
                raw = body.decode() if body else "{}"
                parsed = json.loads(raw)
            except ValueError:
                raise PgrstError(400, "PGRST102", "Empty or invalid json") from None
            keys = set(parsed) if isinstance(parsed, dict) else set()
            args = parsed if isinstance(parsed, dict) else raw
        else:
            raise PgrstError(405, "PGRST101", "Only GET, HEAD or POST are allowed for functions")
        matches: list[tuple[Routine, dict[str, Any] | str]] = []
        for routine in self._cache.routines.get(name, ()):
            single_json = (
                len(routine.params) == 1
                and routine.params[0].name == ""
                and routine.params[0].type in ("json", "jsonb")
            )
            if single_json and method == "POST":
                matches.append((routine, raw))
                continue
            names = {p.name for p in routine.params}
            required = {p.name for p in routine.params if not p.has_default}
            if keys <= names and required <= keys:
                matches.append((routine, args))
        if not matches:
            shown = ", ".join(sorted(keys))
            raise PgrstError(
                404,
                "PGRST202",
                f"Could not find the function {self._schema}.{name}({shown}) in the schema cache",
                f"Searched for the function {self._schema}.{name} with parameters"
                f" {shown or '(none)'}"
                " or with a single unnamed json/jsonb parameter, but no matches were found in"
                " the schema cache.",
                _suggest(name, self._cache.routines, self._schema, "function"),
            )
        if len(matches) > 1:
            raise PgrstError(
                300,
                "PGRST203",
                "Could not choose the best candidate function between: "
                + ", ".join(f"{self._schema}.{r.name}" for r, _ in matches),
            )
        return matches[0]

    def _table_plan(
        self,
        method: str,
        table: Table,
        query: _Query,
        prefer: dict[str, str],
        body: bytes,
        request: Request,
        singular: bool,
    ) -> _Plan:
        qual = (self._schema, table.name)
        target = sql.Identifier(*qual)
        if method in ("GET", "HEAD"):
            _apply_range(query, request.headers.get("range"), request.headers.get("range-unit"))
            return _Plan(
                _read_sql(target, qual, query, prefer, singular), True, "read", table=table
            )
        if method == "PUT":
            raise _unsupported("PUT")
        if method in ("PATCH", "DELETE") and (query.limit is not None or query.offset):
            raise _unsupported(f"limit/offset on {method}")
        returning = prefer.get("return", "minimal")
        rows_sql = sql.SQL("{}.*").format(target) if returning != "minimal" else sql.SQL("1")
        if method == "DELETE":
            mutation = sql.SQL("DELETE FROM {}{} RETURNING {}").format(
                target, _where_sql(query.where, qual), rows_sql
            )
            return _Plan(mutation, False, "delete", table=table)
        if method not in ("POST", "PATCH"):
            raise PgrstError(405, "PGRST117", f"Unsupported HTTP method: {method}")
        payload, columns = _payload(body, query.columns, table)
        if method == "PATCH":
            if not columns:  # nothing to set: PostgREST answers as if no row matched
                noop = sql.SQL("SELECT {}.* FROM {} WHERE false").format(target, target)
                return _Plan(noop, False, "update", table=table)
            body_sql = _recordset_sql(payload, columns, table, defaults=False)
            mutation = sql.SQL(
                "UPDATE {} SET {} FROM (SELECT * FROM {}) pgrst_body{} RETURNING {}"
            ).format(
                target,
                sql.SQL(", ").join(
                    sql.SQL("{} = pgrst_body.{}").format(sql.Identifier(c), sql.Identifier(c))
                    for c in columns
                ),
                body_sql,
                _where_sql(query.where, qual),
                rows_sql,
            )
            return _Plan(mutation, False, "update", table=table)
        defaults = prefer.get("missing") == "default"
        if columns:
            source = sql.SQL("SELECT {} FROM {}").format(
                sql.SQL(", ").join(map(sql.Identifier, columns)),
                _recordset_sql(payload, columns, table, defaults=defaults),
            )
            insert = sql.SQL("INSERT INTO {} ({}) {}").format(
                target, sql.SQL(", ").join(map(sql.Identifier, columns)), source
            )
        else:  # `{}` or `[{}, {}]`: one row of defaults per object
            insert = sql.SQL("INSERT INTO {} SELECT FROM json_array_elements({}::json)").format(
                target, sql.Literal(payload)
            )
        conflict: sql.Composable = sql.SQL("")
        resolution = prefer.get("resolution")
        if resolution in ("merge-duplicates", "ignore-duplicates"):
            keys = query.on_conflict or list(table.pk)
            if keys:
                action: sql.Composable = sql.SQL("DO NOTHING")
                if resolution == "merge-duplicates" and columns:
                    action = sql.SQL("DO UPDATE SET ") + sql.SQL(", ").join(
                        sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c), sql.Identifier(c))
                        for c in columns
                    )
                conflict = sql.SQL(" ON CONFLICT ({}) {}").format(
                    sql.SQL(", ").join(map(sql.Identifier, keys)), action
                )
        mutation = sql.SQL("{}{} RETURNING {}").format(insert, conflict, rows_sql)
        return _Plan(mutation, False, "insert", table=table)


def _wants_singular(accept: str | None) -> bool:
    if not accept:
        return False
    for part in accept.split(","):
        media = part.split(";")[0].strip().lower()
        if media == SINGULAR:
            return True
        if media in _JSON_TYPES:
            return False
    raise PgrstError(406, "PGRST107", f"None of these media types are available: {accept}")


def _parse_prefer(header: str | None) -> dict[str, str]:
    prefs: dict[str, str] = {}
    for part in (header or "").split(","):
        key, _, value = part.strip().partition("=")
        if key:
            prefs[key.lower()] = value.strip()
    return prefs


def _apply_range(query: _Query, header: str | None, unit: str | None) -> None:
    """Narrow limit/offset by a `Range: first-last` header (unit `items`), as PostgREST does."""
    if header is None or (unit or "items") != "items":
        return
    match = _RANGE.match(header.strip())
    if match is None:
        return  # PostgREST ignores a Range it cannot parse
    first = int(match.group(1))
    last = int(match.group(2)) if match.group(2) else None
    if last is not None and last < first:
        raise PgrstError(
            416,
            "PGRST103",
            "Requested range not satisfiable",
            "The lower boundary must be lower than or equal to the upper boundary "
            "in the Range header.",
        )
    start = max(first, query.offset)
    ends = [
        e
        for e in (last, None if query.limit is None else query.offset + query.limit - 1)
        if e is not None
    ]
    query.offset = start
    query.limit = None if not ends else max(0, min(ends) - start + 1)


def _suggest(name: str, known: Mapping[str, Any], schema: str, kind: str) -> str | None:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"Perhaps you meant the {kind} '{schema}.{close[0]}'" if close else None


def _payload(body: bytes, columns: list[str] | None, table: Table) -> tuple[str, list[str]]:
    """The body as a JSON array text, and the columns to write (checked like PostgREST)."""
    try:
        raw = body.decode()
        parsed = json.loads(raw)
    except ValueError:
        raise PgrstError(400, "PGRST102", "Empty or invalid json") from None
    if isinstance(parsed, dict):
        rows, raw = [parsed], f"[{raw}]"
    elif isinstance(parsed, list) and all(isinstance(r, dict) for r in parsed):
        rows = parsed
    else:
        raise PgrstError(400, "PGRST102", "Empty or invalid json")
    if columns is None:
        first = set(rows[0]) if rows else set()
        if any(set(r) != first for r in rows[1:]):
            raise PgrstError(400, "PGRST102", "All object keys must match")
        columns = list(rows[0]) if rows else []
    for c in columns:
        if c not in table.columns:
            raise PgrstError(
                400,
                "PGRST204",
                f"Could not find the '{c}' column of '{table.name}' in the schema cache",
            )
    return raw, columns


def _recordset_sql(
    payload: str, columns: Sequence[str], table: Table, *, defaults: bool
) -> sql.Composed:
    """`json_to_recordset(<payload>) AS _(col type, …)`, with column defaults for missing keys."""
    # Types come from the catalog (format_type), never from the request.
    definition = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(table.columns[c].type)) for c in columns
    )
    with_defaults = [c for c in columns if table.columns[c].default is not None] if defaults else []
    if not with_defaults:
        return sql.SQL("json_to_recordset({}::json) AS _({})").format(
            sql.Literal(payload), definition
        )
    # Defaults are evaluated per element, so volatile ones (gen_random_uuid()) differ per row.
    build = sql.SQL(", ").join(
        sql.SQL("{}, {}").format(sql.Literal(c), sql.SQL(str(table.columns[c].default)))
        for c in with_defaults
    )
    return sql.SQL(
        "jsonb_to_recordset((SELECT jsonb_agg(jsonb_build_object({}) || elem)"
        " FROM jsonb_array_elements({}::jsonb) elem)) AS _({})"
    ).format(build, sql.Literal(payload), definition)


def _read_sql(
    target: sql.Identifier,
    qual: Sequence[str],
    query: _Query,
    prefer: dict[str, str],
    singular: bool,
) -> sql.Composed:
    where = _where_sql(query.where, qual)
    source = sql.SQL("SELECT {} FROM {}{}{}{}").format(
        _select_sql(query.select, qual),
        target,
        where,
        _order_sql(query.order, qual),
        _limit_sql(query.limit, query.offset),
    )
    total: sql.Composable = sql.SQL("null::bigint")
    if prefer.get("count") in ("exact", "planned", "estimated"):
        total = sql.SQL("(SELECT count(*) FROM {}{})").format(target, where)
    return _aggregate_sql(source, total, singular)


def _aggregate_sql(source: sql.Composable, total: sql.Composable, singular: bool) -> sql.Composed:
    body = (
        sql.SQL("coalesce((json_agg(_postgrest_t) -> 0)::text, 'null')")
        if singular
        else sql.SQL("coalesce(json_agg(_postgrest_t), '[]')::text")
    )
    return sql.SQL(
        "SELECT {}, count(_postgrest_t), {},"
        " nullif(current_setting('response.headers', true), ''),"
        " nullif(current_setting('response.status', true), '')"
        " FROM ({}) _postgrest_t"
    ).format(total, body, source)


def _call_sql(
    routine: Routine, schema: str, args: dict[str, Any] | str, query: _Query, singular: bool
) -> sql.Composed:
    fn = sql.Identifier(schema, routine.name)
    if isinstance(args, str):  # one unnamed json/jsonb parameter takes the whole body
        call = sql.SQL("{}({})").format(fn, sql.Literal(args))
        source_from = sql.SQL("{} pgrst_call").format(call)
    elif args:
        types = {p.name: p.type for p in routine.params}
        definition = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(k), sql.SQL(types[k])) for k in args
        )
        named = sql.SQL(", ").join(
            sql.SQL("{} := pgrst_body.{}").format(sql.Identifier(k), sql.Identifier(k))
            for k in args
        )
        source_from = sql.SQL(
            "json_to_record({}::json) AS pgrst_body({}), LATERAL {}({}) pgrst_call"
        ).format(sql.Literal(json.dumps(args)), definition, fn, named)
    else:
        source_from = sql.SQL("{}() pgrst_call").format(fn)
    if routine.returns != "composite":
        # Name the scalar column so it can be selected whatever the function is called.
        source_from = sql.SQL("{}(pgrst_scalar)").format(source_from)
        select: sql.Composable = sql.SQL("pgrst_call.pgrst_scalar")
    else:
        select = _select_sql(query.select, ("pgrst_call",))
    source = sql.SQL("SELECT {} FROM {}{}{}{}").format(
        select,
        source_from,
        _where_sql(query.where, ("pgrst_call",)),
        _order_sql(query.order, ("pgrst_call",)),
        _limit_sql(query.limit, query.offset),
    )
    if routine.returns == "composite":
        one = singular or not routine.returns_set
        return _aggregate_sql(source, sql.SQL("null::bigint"), one)
    body = (
        sql.SQL("coalesce(json_agg(_postgrest_t.pgrst_scalar), '[]')::text")
        if routine.returns_set
        else sql.SQL("coalesce((json_agg(to_json(_postgrest_t.pgrst_scalar)) -> 0)::text, 'null')")
    )
    return sql.SQL(
        "SELECT null::bigint, count(_postgrest_t), {},"
        " nullif(current_setting('response.headers', true), ''),"
        " nullif(current_setting('response.status', true), '')"
        " FROM ({}) _postgrest_t"
    ).format(body, source)


@dataclass
class _Plan:
    statement: sql.Composed
    read_only: bool
    kind: Literal["read", "insert", "update", "delete", "rpc"]
    table: Table | None = None
    routine: Routine | None = None

    async def execute(
        self,
        conn: psycopg.AsyncConnection[Any],
        query: _Query,
        prefer: dict[str, str],
        singular: bool,
        schema: str,
    ) -> _Outcome:
        """Run the statement in the open transaction and shape PostgREST's answer."""
        if self.kind in ("insert", "update", "delete"):
            return await self._mutate(conn, query, prefer, singular, schema)
        cur = await conn.execute(self.statement)
        row = await cur.fetchone()
        assert row is not None
        total, count, body, guc_headers, guc_status = row
        if self.kind == "rpc":
            assert self.routine is not None
            if self.routine.returns == "void":
                return self._with_gucs(_Outcome(204, None), guc_headers, guc_status)
            one = singular or (self.routine.returns == "composite" and not self.routine.returns_set)
            if singular and count != 1:
                return _singular_error(count)
            return self._with_gucs(
                _Outcome(200, body, singular=one and singular), guc_headers, guc_status
            )
        if singular and count != 1:
            return _singular_error(count)
        headers = {"Content-Range": _content_range(query.offset, count, total)}
        if prefer.get("count") in ("exact", "planned", "estimated"):
            headers["Preference-Applied"] = f"count={prefer['count']}"
        status = 200
        if total is not None:
            if query.offset and query.offset >= total > 0:
                raise PgrstError(
                    416,
                    "PGRST103",
                    "Requested range not satisfiable",
                    f"An offset of {query.offset} was requested, but there are only {total} rows.",
                )
            if count < total:
                status = 206
        return self._with_gucs(_Outcome(status, body, headers, singular), guc_headers, guc_status)

    async def _mutate(
        self,
        conn: psycopg.AsyncConnection[Any],
        query: _Query,
        prefer: dict[str, str],
        singular: bool,
        schema: str,
    ) -> _Outcome:
        assert self.table is not None
        returning = prefer.get("return", "minimal")
        applied = [f"return={returning}"] if "return" in prefer else []
        if self.kind == "insert" and prefer.get("resolution") in (
            "merge-duplicates",
            "ignore-duplicates",
        ):
            applied.append(f"resolution={prefer['resolution']}")
        if self.kind == "insert" and prefer.get("missing") == "default":
            applied.append("missing=default")
        alias = self.table.name
        if returning == "minimal":
            final: sql.Composed = sql.SQL(
                "WITH pgrst_source AS ({}) SELECT null::bigint, count(*), null::text,"
                " nullif(current_setting('response.headers', true), ''),"
                " nullif(current_setting('response.status', true), '') FROM pgrst_source"
            ).format(self.statement)
        else:
            source = sql.SQL("SELECT {} FROM pgrst_source AS {}").format(
                _select_sql(query.select, (alias,)), sql.Identifier(alias)
            )
            final = sql.SQL("WITH pgrst_source AS ({}) {}").format(
                self.statement, _aggregate_sql(source, sql.SQL("null::bigint"), singular)
            )
        cur = await conn.execute(final)
        row = await cur.fetchone()
        assert row is not None
        _, count, body, guc_headers, guc_status = row
        if singular and count != 1:
            return _singular_error(count)
        headers = {
            "Content-Range": "*/*" if self.kind == "insert" else _content_range(0, count, None)
        }
        if applied:
            headers["Preference-Applied"] = ", ".join(applied)
        if returning == "headers-only" and self.kind == "insert" and count == 1 and body:
            rows = json.loads(body)
            first = rows if isinstance(rows, dict) else rows[0]
            if self.table.pk and all(k in first for k in self.table.pk):
                headers["Location"] = f"/{self.table.name}?" + "&".join(
                    f"{k}=eq.{first[k]}" for k in self.table.pk
                )
        if returning == "representation":
            status = 201 if self.kind == "insert" else 200
            outcome = _Outcome(status, body, headers, singular)
        else:
            outcome = _Outcome(201 if self.kind == "insert" else 204, None, headers)
        return self._with_gucs(outcome, guc_headers, guc_status)

    @staticmethod
    def _with_gucs(outcome: _Outcome, guc_headers: str | None, guc_status: str | None) -> _Outcome:
        # Functions may set `response.headers` / `response.status`; PostgREST applies them.
        if guc_headers:
            for item in json.loads(guc_headers):
                for k, v in item.items():
                    outcome.headers[k] = str(v)
        if guc_status:
            outcome.status = int(guc_status)
        return outcome


def _singular_error(count: int) -> _Outcome:
    body = {
        "code": "PGRST116",
        "details": f"The result contains {count} rows",
        "hint": None,
        "message": "JSON object requested, multiple (or no) rows returned",
    }
    return _Outcome(406, json.dumps(body), singular=True)


def _content_range(offset: int, count: int, total: int | None) -> str:
    size = "*" if total is None else str(total)
    if count == 0:
        return f"*/{size}"
    return f"{offset}-{offset + count - 1}/{size}"
