# ruff: noqa: T201  (a benchmark tool prints its figures)
"""A lean closed-loop HTTP/1.1 load generator: N keep-alive connections, one request in flight
on each, for a fixed time; prints one JSON object (req/s, p50, p99, errors).

Standard library only (uvloop when importable), raw asyncio protocols and pre-encoded request
bytes, so its own cost per request is a few tens of microseconds; run it in its own process.

    python bench/_load.py --url http://127.0.0.1:8000/v1/models/churn/predict \
        --bodies bodies.json --connections 16 --duration 15 --warmup 3

`--bodies` is a JSON list of request bodies (strings or JSON values), sent round-robin (each
connection starts at its own offset). A request counts once its whole response has arrived
inside the measured window; any status but 200, a reset or a timeout is an error.
`--serve PORT` instead runs a trivial HTTP server (fixed 200 answer) to measure the load
generator's own ceiling against.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any
from urllib.parse import urlsplit

try:
    import uvloop
except ImportError:  # pragma: no cover - the plain loop is slower but correct
    uvloop = None  # type: ignore[assignment]


class Stats:
    def __init__(self) -> None:
        self.latencies_ns: list[int] = []
        self.errors = 0
        self.statuses: dict[int, int] = {}
        self.recording = False
        self.stopping = False
        self.sample: bytes = b""


class Conn(asyncio.Protocol):
    def __init__(
        self, requests: list[bytes], offset: int, stats: Stats, done: asyncio.Future[None]
    ):
        self.requests = requests
        self.i = offset
        self.stats = stats
        self.done = done
        self.buf = bytearray()
        self.need = -1  # bytes of the whole response once its headers are read
        self.status = 0
        self.sent_ns = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.send()

    def send(self) -> None:
        if self.stats.stopping:
            if self.transport is not None:
                self.transport.close()
            return
        request = self.requests[self.i % len(self.requests)]
        self.i += 1
        self.sent_ns = time.perf_counter_ns()
        assert self.transport is not None
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            if self.need < 0:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
                self.status = int(head[0].split(" ", 2)[1])
                length = None
                for line in head[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                    elif name.strip().lower() == "transfer-encoding":
                        raise RuntimeError("chunked responses are not supported")
                if length is None:
                    raise RuntimeError("a response without Content-Length")
                self.need = end + 4 + length
            if len(self.buf) < self.need:
                return
            elapsed = time.perf_counter_ns() - self.sent_ns
            if not self.stats.sample:
                self.stats.sample = bytes(self.buf[: self.need])
            del self.buf[: self.need]
            self.need = -1
            if self.stats.recording:
                self.stats.statuses[self.status] = self.stats.statuses.get(self.status, 0) + 1
                if self.status == 200:
                    self.stats.latencies_ns.append(elapsed)
                else:
                    self.stats.errors += 1
            self.send()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.stats.stopping and self.stats.recording:
            self.stats.errors += 1
        if not self.done.done():
            self.done.set_result(None)


def encode(url: str, bodies: list[Any], content_type: str) -> tuple[str, int, list[bytes]]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    out = []
    for body in bodies:
        raw = (body if isinstance(body, str) else json.dumps(body)).encode()
        out.append(
            (
                f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                f"Content-Type: {content_type}\r\nContent-Length: {len(raw)}\r\n\r\n"
            ).encode()
            + raw
        )
    return host, port, out


def percentile(sorted_ns: list[int], q: float) -> float:
    if not sorted_ns:
        return float("nan")
    k = min(len(sorted_ns) - 1, max(0, round(q * (len(sorted_ns) - 1))))
    return sorted_ns[k] / 1e6


async def drive(args: argparse.Namespace) -> dict[str, Any]:
    bodies = json.loads(open(args.bodies).read()) if args.bodies else [""]  # noqa: SIM115, ASYNC230
    host, port, requests = encode(args.url, bodies, args.content_type)
    loop = asyncio.get_running_loop()
    stats = Stats()
    dones = []
    transports = []
    for c in range(args.connections):
        done: asyncio.Future[None] = loop.create_future()
        offset = c * max(1, len(requests) // max(1, args.connections))
        transport, _ = await loop.create_connection(
            lambda o=offset, d=done: Conn(requests, o, stats, d), host, port
        )
        transports.append(transport)
        dones.append(done)
    await asyncio.sleep(args.warmup)
    stats.recording = True
    started = time.perf_counter()
    await asyncio.sleep(args.duration)
    stats.recording = False
    measured = time.perf_counter() - started
    stats.stopping = True
    try:
        await asyncio.wait_for(asyncio.gather(*dones), timeout=args.timeout)
    except TimeoutError:
        stats.errors += sum(1 for d in dones if not d.done())
        for t in transports:
            t.abort()
    lat = sorted(stats.latencies_ns)
    return {
        "connections": args.connections,
        "duration_s": round(measured, 3),
        "requests": len(lat),
        "rps": len(lat) / measured,
        "p50_ms": percentile(lat, 0.50),
        "p90_ms": percentile(lat, 0.90),
        "p99_ms": percentile(lat, 0.99),
        "max_ms": lat[-1] / 1e6 if lat else float("nan"),
        "errors": stats.errors,
        "statuses": {str(k): v for k, v in stats.statuses.items()},
        "sample": stats.sample.decode("utf-8", "replace")[-400:],
    }


class Trivial(asyncio.Protocol):
    ANSWER = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n"
        b'{"ok":true}'
    )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buf = bytearray()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            length = 0
            for line in bytes(self.buf[:end]).split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(self.buf) < end + 4 + length:
                return
            del self.buf[: end + 4 + length]
            self.transport.write(self.ANSWER)  # type: ignore[attr-defined]


async def serve_trivial(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(Trivial, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url")
    parser.add_argument("--bodies", help="JSON file: a list of request bodies")
    parser.add_argument("--content-type", default="application/json")
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--serve", type=int, help="run the trivial server on this port instead")
    args = parser.parse_args()
    run = uvloop.run if uvloop is not None else asyncio.run
    if args.serve:
        run(serve_trivial(args.serve))
        return
    print(json.dumps(run(drive(args))))


if __name__ == "__main__":
    main()
