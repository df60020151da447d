"""Benchmark spawning: the API's own spawn rate and latency, and spawn → first live log line.

    python -m bench.spawn [--quick] [--httpx]

The API is served by uvicorn on 127.0.0.1 over a real socket, on an embedded PostgreSQL in a
temporary directory, with real Services. The load generator runs in a separate process (this
module again, `--client`) with its own event loop, so client and server never share a loop.
It spawns over keep-alive HTTP/1.1 connections it writes by hand (`RawPoster`: httpx costs as
much CPU per request as the API, which on two cores would halve the figure; `--httpx` uses it
anyway, for comparison) and follows streams with httpx. Every spawn carries its own
Idempotency-Key and HMAC signature.

- saturation: 16 concurrent clients spawn back to back with the agents held in the
  dispatcher's queue (`pause()`), so the figure is the API's own (in production the agents
  run in other containers); accepted spawns per second over a fixed count, after a warm-up;
- open loop: spawns sent on a fixed schedule (100/s) whatever the responses do; latency is
  response time − scheduled send time, so a stall is charged to every request it delays;
- first log: agents running, each spawn followed by a reader of `GET /projects/{id}/stream`;
  latency is the first SSE data frame's arrival − the spawn's scheduled send time.

The last line: `spawns_per_s= p50_ms= p99_ms= first_log_p99_ms=`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import math
import os
import secrets
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

CLIENTS = 16
OPEN_LOOP_RATE = 100.0
FIRST_LOG_RATE = 5.0
SECRET_ENV = "MYYC_BENCH_HMAC_SECRET"
# Generous: a timed-out request is reported as a failure, never silently dropped.
REQUEST_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class Sizes:
    """How many requests each phase sends."""

    warmup: int
    saturation: int
    open_loop: int
    first_log: int


QUICK = Sizes(warmup=300, saturation=3_000, open_loop=1_000, first_log=50)
FULL = Sizes(warmup=1_000, saturation=20_000, open_loop=6_000, first_log=100)


# -- pure helpers (tests/unit/test_bench_spawn.py) ---------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank `q`-th percentile: the smallest value with at least q% of values ≤ it.

    Nearest rank never interpolates, so a reported p99 is a latency some request really had.
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0 < q <= 100:
        raise ValueError(f"q must be in (0, 100], not {q}")
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


@dataclass(frozen=True, slots=True)
class Summary:
    """One phase's figures: how many requests, at what rate, how fast (milliseconds)."""

    n: int
    per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float


def summarize(latencies_ms: Sequence[float], seconds: float) -> Summary:
    """The phase's summary: `len(latencies_ms)` requests completed in `seconds`."""
    if seconds <= 0:
        raise ValueError("a phase takes some time")
    return Summary(
        n=len(latencies_ms),
        per_s=len(latencies_ms) / seconds,
        p50_ms=percentile(latencies_ms, 50),
        p99_ms=percentile(latencies_ms, 99),
        max_ms=max(latencies_ms),
    )


def open_loop_schedule(rate: float, n: int) -> list[float]:
    """Send offsets (seconds from the start) of `n` requests at a steady `rate` per second."""
    if rate <= 0:
        raise ValueError("rate must be positive")
    return [i / rate for i in range(n)]


def result_line(saturation: Summary, open_loop: Summary, first_log: Summary) -> str:
    """The benchmark's one-line result."""
    return (
        f"spawns_per_s={saturation.per_s:.0f} p50_ms={open_loop.p50_ms:.1f}"
        f" p99_ms={open_loop.p99_ms:.1f} first_log_p99_ms={first_log.p99_ms:.1f}"
    )


def table(rows: Sequence[tuple[str, Summary]], errors: dict[str, int]) -> str:
    """The phases as a small fixed-width table."""
    header = ("n", "per s", "p50 ms", "p99 ms", "max ms")
    lines = [f"{'phase':<32}" + "".join(f"{h:>9}" for h in header) + f"{'errors':>8}"]
    for name, s in rows:
        lines.append(
            f"{name:<32}{s.n:>9}{s.per_s:>9.1f}{s.p50_ms:>9.1f}{s.p99_ms:>9.1f}"
            f"{s.max_ms:>9.1f}{errors.get(name, 0):>8}"
        )
    return "\n".join(lines)


# -- the load generator (a separate process) ---------------------------------------------------


def parse_response_head(head: bytes) -> tuple[int, int, bool]:
    """An HTTP/1.1 response head → (status, Content-Length, whether the connection stays open).

    The API answers every non-streaming request with a Content-Length; anything else (chunked,
    no length) is refused here rather than misread.
    """
    status_line, *lines = head.rstrip(b"\r\n").split(b"\r\n")
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise ValueError(f"not an HTTP/1.x status line: {status_line[:80]!r}")
    length: int | None = None
    keep_alive = parts[0] == b"HTTP/1.1"
    for line in lines:
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection":
            keep_alive = value == b"keep-alive" or (keep_alive and value != b"close")
        elif name == b"transfer-encoding":
            raise ValueError(f"unexpected transfer-encoding {value!r}")
    if length is None:
        raise ValueError("response without Content-Length")
    return int(parts[1]), length, keep_alive


class _Connection:
    """One keep-alive HTTP/1.1 connection: a request, then its response, then the next."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def post(
        self, host: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, bytes, bool]:
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nhost: {host}\r\n{head}content-length: {len(body)}\r\n\r\n"
            .encode("latin-1") + body
        )  # fmt: skip
        status, length, keep_alive = parse_response_head(await self.reader.readuntil(b"\r\n\r\n"))
        return status, await self.reader.readexactly(length), keep_alive

    def close(self) -> None:
        """Close the socket (without waiting for the peer)."""
        self.writer.close()


class RawPoster:
    """POSTs over a pool of keep-alive HTTP/1.1 connections written by hand.

    Why not httpx: on two cores the load generator competes with the server for CPU, and
    httpx spends about as much CPU per request as the API does (measured: 300–390 spawns/s
    through httpx against 630–860/s through this), so the figure would be httpx's. A
    connection is taken per request in flight, so 16 busy workers hold 16 connections.
    """

    def __init__(self, url: str) -> None:
        parsed = httpx.URL(url)
        self._host, self._port = parsed.host, parsed.port or 80
        self._idle: list[_Connection] = []

    async def post(self, path: str, headers: Mapping[str, str], body: bytes) -> tuple[int, bytes]:
        """POST `body` to `path`; return the status and the response body.

        uvicorn closes a connection idle for 5 s, and the close can cross a request sent on
        it: like browsers, send such a request once more on a new connection (a spawn carries
        its Idempotency-Key, so a repeat cannot create a second project).
        """
        while self._idle:
            connection = self._idle.pop()
            if connection.reader.at_eof():
                connection.close()
                continue
            try:
                return await self._send(connection, path, headers, body)
            except (ConnectionError, asyncio.IncompleteReadError):
                break
        connection = _Connection(*await asyncio.open_connection(self._host, self._port))
        return await self._send(connection, path, headers, body)

    async def _send(
        self, connection: _Connection, path: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, bytes]:
        try:
            host = f"{self._host}:{self._port}"
            status, content, keep_alive = await asyncio.wait_for(
                connection.post(host, path, headers, body), REQUEST_TIMEOUT_S
            )
        except BaseException:
            connection.close()
            raise
        if keep_alive:
            self._idle.append(connection)
        else:
            connection.close()
        return status, content

    async def aclose(self) -> None:
        """Close every idle connection."""
        for connection in self._idle:
            connection.close()
        self._idle.clear()


class HttpxPoster:
    """The same POSTs through one keep-alive httpx.AsyncClient (`--httpx`, for comparison)."""

    def __init__(self, url: str) -> None:
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
        self._http = httpx.AsyncClient(base_url=url, limits=limits, timeout=REQUEST_TIMEOUT_S)

    async def post(self, path: str, headers: Mapping[str, str], body: bytes) -> tuple[int, bytes]:
        """POST `body` to `path`; return the status and the response body."""
        response = await self._http.post(path, content=body, headers=headers)
        return response.status_code, response.content

    async def aclose(self) -> None:
        """Close the client."""
        await self._http.aclose()


Poster = RawPoster | HttpxPoster


class Spawner:
    """Signed spawns (each with its own Idempotency-Key) and signed stream reads."""

    def __init__(self, poster: Poster, secret: bytes) -> None:
        from api.auth import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

        self._poster = poster
        self._secret = secret
        self._sign = sign
        self._headers = (TIMESTAMP_HEADER, SIGNATURE_HEADER)
        self._run = uuid.uuid4().hex[:8]

    def signed(self, method: str, path: str, body: bytes) -> dict[str, str]:
        """HMAC headers for one request (a unique body or path makes each signature new)."""
        ts = int(time.time())
        ts_header, sig_header = self._headers
        return {ts_header: str(ts), sig_header: self._sign(self._secret, ts, method, path, body)}

    async def spawn(self, i: int) -> tuple[int, bytes]:
        """POST /spawn of idea `i`; the status and the response body."""
        body = json.dumps(
            {"title": f"Bench app {self._run}-{i}", "description": "Save recipes, plan meals",
             "category": "food-tech"}
        ).encode()  # fmt: skip
        headers = {
            "content-type": "application/json",
            "idempotency-key": uuid.uuid4().hex,
            **self.signed("POST", "/spawn", body),
        }
        return await self._poster.post("/spawn", headers, body)

    async def first_frame(self, http: httpx.AsyncClient, project_id: str) -> None:
        """Follow the project's stream until its first data frame arrives."""
        path = f"/projects/{project_id}/stream"
        headers = {"accept": "text/event-stream", **self.signed("GET", path, b"")}
        async with http.stream("GET", path, headers=headers) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    return
        raise RuntimeError(f"the stream of {project_id} ended without a frame")


@dataclass
class Measured:
    """What one phase of the load generator saw."""

    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_json(self) -> dict[str, Any]:
        """For the trip back to the server process."""
        return {"latencies_ms": self.latencies_ms, "errors": self.errors, "seconds": self.seconds}


async def saturate(spawner: Spawner, *, clients: int, warmup: int, n: int) -> Measured:
    """`clients` workers spawn back to back: `warmup` spawns, then `n` measured ones."""
    names = itertools.count()

    async def batch(total: int) -> Measured:
        taken = itertools.count()
        measured = Measured()

        async def worker() -> None:
            while next(taken) < total:
                sent = time.perf_counter()
                status, content = await spawner.spawn(next(names))
                if status == 202:
                    measured.latencies_ms.append((time.perf_counter() - sent) * 1000)
                else:
                    measured.errors.append(f"{status} {content[:200]!r}")

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        measured.seconds = time.perf_counter() - start
        return measured

    await batch(warmup)
    return await batch(n)


async def on_schedule(
    rate: float, n: int, one: Callable[[int, float], Coroutine[Any, Any, None]]
) -> float:
    """Start `one(i, scheduled_time)` for `n` requests at `rate`/s, whatever the earlier ones
    are doing (open loop); return the seconds from the first scheduled send to the last end."""
    start = time.perf_counter() + 0.05
    tasks: list[asyncio.Task[None]] = []
    for i, offset in enumerate(open_loop_schedule(rate, n)):
        await asyncio.sleep(max(0.0, start + offset - time.perf_counter()))
        tasks.append(asyncio.create_task(one(i, start + offset)))
    await asyncio.gather(*tasks)
    return time.perf_counter() - start


async def open_loop(spawner: Spawner, *, rate: float, n: int) -> Measured:
    """`n` spawns sent on schedule at `rate`/s; latency counted from each scheduled time."""
    measured = Measured()

    async def one(i: int, scheduled: float) -> None:
        status, content = await spawner.spawn(i)
        if status == 202:
            measured.latencies_ms.append((time.perf_counter() - scheduled) * 1000)
        else:
            measured.errors.append(f"{status} {content[:200]!r}")

    measured.seconds = await on_schedule(rate, n, one)
    return measured


async def first_logs(spawner: Spawner, url: str, *, rate: float, n: int) -> Measured:
    """`n` spawns at `rate`/s, each followed on its stream until its first frame arrives."""
    measured = Measured()
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=REQUEST_TIMEOUT_S) as http:

        async def one(i: int, scheduled: float) -> None:
            status, content = await spawner.spawn(i)
            if status != 202:
                measured.errors.append(f"{status} {content[:200]!r}")
                return
            project_id = json.loads(content)["project_id"]
            try:
                await asyncio.wait_for(spawner.first_frame(http, project_id), REQUEST_TIMEOUT_S)
            except (TimeoutError, httpx.HTTPError) as err:
                measured.errors.append(f"stream of {project_id}: {err!r}")
                return
            measured.latencies_ms.append((time.perf_counter() - scheduled) * 1000)

        measured.seconds = await on_schedule(rate, n, one)
    return measured


async def _client_main(spec: dict[str, Any]) -> dict[str, Any]:
    url, mode = str(spec["url"]), spec["mode"]
    poster: Poster = HttpxPoster(url) if spec.get("httpx") else RawPoster(url)
    spawner = Spawner(poster, os.environ[SECRET_ENV].encode())
    try:
        if mode == "saturate":
            measured = await saturate(spawner, clients=int(spec["clients"]),
                                      warmup=int(spec["warmup"]), n=int(spec["n"]))  # fmt: skip
        elif mode == "open_loop":
            measured = await open_loop(spawner, rate=float(spec["rate"]), n=int(spec["n"]))
        elif mode == "first_log":
            measured = await first_logs(spawner, url, rate=float(spec["rate"]), n=int(spec["n"]))
        else:
            raise ValueError(f"unknown client mode {mode!r}")
    finally:
        await poster.aclose()
    return measured.as_json()


async def run_client(spec: dict[str, Any], secret: str) -> Measured:
    """Run one phase's load generator in a child process; return what it measured."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.spawn", "--client", json.dumps(spec),
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, SECRET_ENV: secret},  # not argv: other users can read that
    )  # fmt: skip
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"the load generator ({spec['mode']}) exited with {proc.returncode}")
    result = json.loads(out.decode().strip().splitlines()[-1])
    return Measured(
        latencies_ms=[float(x) for x in result["latencies_ms"]],
        errors=[str(e) for e in result["errors"]],
        seconds=float(result["seconds"]),
    )


# -- the server (this process) -----------------------------------------------------------------


async def main(sizes: Sizes, root: Path, *, use_httpx: bool = False) -> None:
    """Run the three phases against one server; print the table and the result line."""
    from pydantic import SecretStr

    from agents.dispatch import LocalDispatcher
    from api.app import create_app
    from core.services import Services
    from local.pg import EmbeddedPostgres
    from local.server import serve
    from schemas.settings import Settings
    from store.migrate import migrate

    secret = secrets.token_hex(32)
    pg = EmbeddedPostgres(root / "pg")
    url = await asyncio.to_thread(pg.start)
    try:
        await migrate(url)
        settings = Settings(database_url=url, myyc_data_dir=root / "data",
                            myyc_hmac_secret=SecretStr(secret))  # fmt: skip
        services = await Services.open(settings)
        try:
            async with serve(create_app(services)) as base:
                held = services.dispatcher
                assert isinstance(held, LocalDispatcher)
                held.pause()
                client = {"url": base, "httpx": use_httpx}
                # The server's CPU time per spawn, unlike its rate, hardly depends on what
                # else the machine runs: the figure to compare changes to the request path by.
                cpu = time.process_time()
                saturated = await run_client(
                    {**client, "mode": "saturate", "clients": CLIENTS, "warmup": sizes.warmup,
                     "n": sizes.saturation}, secret)  # fmt: skip
                cpu_per_spawn_us = (time.process_time() - cpu) / (sizes.warmup + sizes.saturation)
                opened = await run_client(
                    {**client, "mode": "open_loop", "rate": OPEN_LOOP_RATE, "n": sizes.open_loop},
                    secret,
                )
                queued = held.queued
                # Thousands of held orchestrators would swamp the agents of the last phase:
                # drop them (quietly: each drop logs a warning) and start a fresh dispatcher.
                logging.getLogger("agents.dispatch").setLevel(logging.ERROR)
                await held.close(timeout=5)
                logging.getLogger("agents.dispatch").setLevel(logging.NOTSET)
                running = services.dispatcher = LocalDispatcher(services, services.registry)
                followed = await run_client(
                    {**client, "mode": "first_log", "rate": FIRST_LOG_RATE, "n": sizes.first_log},
                    secret,
                )
                await asyncio.wait_for(running.join(), 120)
        finally:
            await services.close()
    finally:
        await asyncio.to_thread(pg.close)
        shutil.rmtree(root, ignore_errors=True)

    phases = [
        (f"saturation, {CLIENTS} clients, held", saturated),
        (f"open loop {OPEN_LOOP_RATE:.0f}/s, held", opened),
        (f"first log {FIRST_LOG_RATE:.0f}/s, running", followed),
    ]
    for name, measured in phases:
        for error in measured.errors[:5]:
            print(f"{name}: {error}")
    summaries = [(name, summarize(m.latencies_ms, m.seconds)) for name, m in phases]
    print(table(summaries, {name: len(m.errors) for name, m in phases}))
    print(f"load generator: {'httpx' if use_httpx else 'raw HTTP/1.1 keep-alive'}, another "
          f"process; cpus: {os.cpu_count()}; spawns held in the queue: {queued}")  # fmt: skip
    print(f"API process CPU per spawn at saturation: {cpu_per_spawn_us * 1e6:.0f} µs")
    print(result_line(*(s for _, s in summaries)))


def bench_dir() -> Path:
    """A scratch directory the embedded server's system user can reach (0755)."""
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="myyc-bench-spawn-"))
    root.chmod(0o755)
    return root


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs (under a minute)")
    parser.add_argument(
        "--httpx", action="store_true", help="generate load with httpx (slower: for comparison)"
    )
    parser.add_argument("--client", metavar="SPEC", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        print(json.dumps(asyncio.run(_client_main(json.loads(args.client)))))
    else:
        asyncio.run(main(QUICK if args.quick else FULL, bench_dir(), use_httpx=args.httpx))
