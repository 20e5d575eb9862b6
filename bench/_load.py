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

`--rate R` instead drives an open loop (bench/load.py): one-row driftloop /v1 predict
requests at a fixed R per second for `--duration`, on up to `--connections` keep-alive
connections, each row with its own id; with `--feedback-url` the labels of the rows answered
200 follow in batches. `--rows` is a JSON list of [instance, label] pairs. Latency runs from
when a request was due, so a server that falls behind shows in it.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import time
from collections.abc import Callable
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


class ResponseReader:
    """Splits a keep-alive HTTP/1.1 byte stream into whole responses (Content-Length framed)."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.need = -1  # bytes of the whole response once its headers are read
        self.status = 0
        self.body_at = 0

    def feed(self, data: bytes) -> list[tuple[int, bytes, int]]:
        """Every response completed by `data`: (status, the whole response, where its body
        starts)."""
        self.buf += data
        done = []
        while True:
            if self.need < 0:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return done
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
                self.body_at = end + 4
            if len(self.buf) < self.need:
                return done
            done.append((self.status, bytes(self.buf[: self.need]), self.body_at))
            del self.buf[: self.need]
            self.need = -1


class Conn(asyncio.Protocol):
    def __init__(
        self, requests: list[bytes], offset: int, stats: Stats, done: asyncio.Future[None]
    ):
        self.requests = requests
        self.i = offset
        self.stats = stats
        self.done = done
        self.reader = ResponseReader()
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
        for status, whole, _ in self.reader.feed(data):
            elapsed = time.perf_counter_ns() - self.sent_ns
            if not self.stats.sample:
                self.stats.sample = whole
            if self.stats.recording:
                self.stats.statuses[status] = self.stats.statuses.get(status, 0) + 1
                if status == 200:
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


# Open loop -----------------------------------------------------------------------------------
# Requests leave at a fixed rate whatever the answers do (request i is due at start + i/rate),
# on a pool of keep-alive connections that grows up to --connections; a request that finds
# every connection busy waits in a backlog. Its latency runs from when it was due, not when it
# was written, so a server that falls behind shows it (no coordinated omission). Each row has
# its own id (--id-prefix + sequence); the labels of the rows answered 200 go to the feedback
# endpoint in batches of --labels-batch on a connection of their own.


IDLE_REUSE_S = 3.0  # an idle connection older than this is closed, not reused: uvicorn
# closes keep-alive connections idle for 5 s, and a request written as it does is lost


class Exchange(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time for an owner that is told of
    each response (`answered`) and of the connection's end (`lost`)."""

    def __init__(self, owner: Any) -> None:
        self.owner = owner
        self.reader = ResponseReader()
        self.transport: asyncio.Transport | None = None
        self.job: Any = None  # what is in flight, None when idle
        self.closed = False
        self.idle_since = time.monotonic()
        self.for_labels = False  # the feedback connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, job: Any, request: bytes) -> None:
        self.job = job
        assert self.transport is not None
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        for status, whole, body_at in self.reader.feed(data):
            job, self.job = self.job, None
            self.idle_since = time.monotonic()
            self.owner.answered(self, job, status, whole[body_at:])

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        job, self.job = self.job, None
        self.owner.lost(self, job)


class OpenLoop:
    """The open-loop run: what was sent and answered, and the labels that followed."""

    def __init__(self, args: argparse.Namespace, rows: list[Any]) -> None:
        parts = urlsplit(args.url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.path = parts.path
        self.feedback_path = urlsplit(args.feedback_url).path if args.feedback_url else None
        self.rows = rows
        self.rate = args.rate
        self.prefix = args.id_prefix
        self.labels_batch = args.labels_batch
        self.max_conns = args.connections
        self.idle: list[Exchange] = []  # a stack: the most recently used connection first
        self.conns = 0  # open or opening
        self.opened = 0
        self.backlog: collections.deque[tuple[int, int]] = collections.deque()
        self.max_backlog = 0
        self.in_flight = 0
        self.sent = 0
        self.statuses: dict[int, int] = {}
        self.connection_errors = 0
        self.latencies_ns: list[int] = []  # from due, requests answered 200
        self.service_ns: list[int] = []  # from written, requests answered 200
        self.late_ns: list[int] = []  # written minus due: the load generator's own lag
        self.minutes: dict[int, dict[str, Any]] = {}
        self.versions: dict[str, int] = {}
        self.rows_accepted = 0
        self.sample = b""
        # labels
        self.labels: list[tuple[str, Any]] = []
        self.feedback_queue: collections.deque[list[tuple[str, Any]]] = collections.deque()
        self.feedback: Exchange | None = None
        self.feedback_busy = False
        self.labels_sent = 0
        self.labels_accepted = 0
        self.feedback_statuses: dict[int, int] = {}
        self.feedback_errors = 0

    # requests -----------------------------------------------------------------------------

    def request(self, i: int) -> bytes:
        instance, _ = self.rows[i % len(self.rows)]
        raw = json.dumps({"instances": [instance], "ids": [f"{self.prefix}{i}"]}).encode()
        return (
            f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(raw)}\r\n\r\n"
        ).encode() + raw

    def minute(self, due_ns: int) -> dict[str, Any]:
        m = int((due_ns - self.start_ns) // 60_000_000_000)
        if m not in self.minutes:
            self.minutes[m] = {"sent": 0, "statuses": {}, "errors": 0, "latencies_ns": []}
        return self.minutes[m]

    def dispatch(self, i: int, due_ns: int) -> None:
        self.sent += 1
        self.minute(due_ns)["sent"] += 1
        while self.idle:
            conn = self.idle.pop()
            if conn.closed:
                continue
            if time.monotonic() - conn.idle_since > IDLE_REUSE_S:
                # the server may be closing it right now: a request written then is lost
                assert conn.transport is not None
                conn.transport.close()
                continue
            self.write(conn, i, due_ns)
            return
        if self.conns < self.max_conns:
            self.conns += 1
            self.in_flight += 1
            asyncio.get_running_loop().create_task(self.connect_and_send(i, due_ns))
            return
        self.backlog.append((i, due_ns))
        self.max_backlog = max(self.max_backlog, len(self.backlog))

    def write(self, conn: Exchange, i: int, due_ns: int) -> None:
        self.in_flight += 1
        now = time.perf_counter_ns()
        self.late_ns.append(now - due_ns)
        conn.send(("predict", i, due_ns, now), self.request(i))

    async def connect_and_send(self, i: int, due_ns: int) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(lambda: Exchange(self), self.host, self.port)
        except OSError:
            self.conns -= 1
            self.in_flight -= 1
            self.connection_errors += 1
            self.minute(due_ns)["errors"] += 1
            return
        self.opened += 1
        self.in_flight -= 1
        self.write(conn, i, due_ns)

    def answered(self, conn: Exchange, job: Any, status: int, body: bytes) -> None:
        if job is None:
            return
        if job[0] == "feedback":
            self.feedback_answered(job, status)
            return
        _, i, due_ns, written_ns = job
        now = time.perf_counter_ns()
        self.in_flight -= 1
        self.statuses[status] = self.statuses.get(status, 0) + 1
        minute = self.minute(due_ns)
        minute["statuses"][status] = minute["statuses"].get(status, 0) + 1
        if not self.sample:
            self.sample = body[:400]
        if 200 <= status < 300:
            self.latencies_ns.append(now - due_ns)
            self.service_ns.append(now - written_ns)
            minute["latencies_ns"].append(now - due_ns)
            self.rows_accepted += 1
            try:
                version = str(json.loads(body).get("version"))
            except ValueError:
                version = "?"
            self.versions[version] = self.versions.get(version, 0) + 1
            if self.feedback_path is not None:
                self.labels.append((f"{self.prefix}{i}", self.rows[i % len(self.rows)][1]))
                if len(self.labels) >= self.labels_batch:
                    self.queue_labels()
        if self.backlog:
            self.write(conn, *self.backlog.popleft())
        else:
            self.idle.append(conn)

    def lost(self, conn: Exchange, job: Any) -> None:
        if conn.for_labels:
            if conn is self.feedback:
                self.feedback = None
            if job is not None:  # a batch in flight gets no answer
                self.feedback_errors += 1
                self.feedback_busy = False
                self.labels_done(job, accepted=False)
                if self.feedback_queue:
                    asyncio.get_running_loop().create_task(self.send_feedback())
            return
        self.conns -= 1
        if job is not None:  # the request in flight gets no answer
            self.in_flight -= 1
            self.connection_errors += 1
            self.minute(job[2])["errors"] += 1
        if self.backlog and self.conns < self.max_conns:
            self.conns += 1
            self.in_flight += 1
            i, due_ns = self.backlog.popleft()
            asyncio.get_running_loop().create_task(self.connect_and_send(i, due_ns))

    # labels -------------------------------------------------------------------------------

    def queue_labels(self) -> None:
        if self.labels:
            self.feedback_queue.append(self.labels)
            self.labels = []
            if not self.feedback_busy:
                asyncio.get_running_loop().create_task(self.send_feedback())

    async def send_feedback(self) -> None:
        if self.feedback_busy or not self.feedback_queue or self.feedback_path is None:
            return
        self.feedback_busy = True
        if self.feedback is not None and time.monotonic() - self.feedback.idle_since > IDLE_REUSE_S:
            assert self.feedback.transport is not None
            self.feedback.transport.close()
            self.feedback = None
        if self.feedback is None or self.feedback.closed:
            try:
                _, conn = await asyncio.get_running_loop().create_connection(
                    lambda: Exchange(self), self.host, self.port
                )
            except OSError:
                self.feedback_errors += 1
                self.labels_done(("feedback", self.feedback_queue.popleft()), accepted=False)
                self.feedback_busy = False
                await asyncio.sleep(0.5)
                asyncio.get_running_loop().create_task(self.send_feedback())
                return
            conn.for_labels = True
            self.feedback = conn
        labels = self.feedback_queue.popleft()
        raw = json.dumps({"labels": [{"id": i, "label": y} for i, y in labels]}).encode()
        self.feedback.send(
            ("feedback", labels),
            (
                f"POST {self.feedback_path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(raw)}\r\n\r\n"
            ).encode()
            + raw,
        )

    def feedback_answered(self, job: Any, status: int) -> None:
        self.feedback_statuses[status] = self.feedback_statuses.get(status, 0) + 1
        self.feedback_busy = False
        self.labels_done(job, accepted=200 <= status < 300)
        if self.feedback_queue:
            asyncio.get_running_loop().create_task(self.send_feedback())

    def labels_done(self, job: Any, *, accepted: bool) -> None:
        self.labels_sent += len(job[1])
        if accepted:
            self.labels_accepted += len(job[1])

    # the run ------------------------------------------------------------------------------

    async def run(self, duration: float, drain: float) -> dict[str, Any]:
        interval_ns = 1e9 / self.rate
        self.start_ns = time.perf_counter_ns() + 50_000_000
        end_ns = self.start_ns + int(duration * 1e9)
        i = 0
        while True:
            due = self.start_ns + int(i * interval_ns)
            if due >= end_ns:
                break
            now = time.perf_counter_ns()
            if due > now:
                await asyncio.sleep((due - now) / 1e9)
                continue
            self.dispatch(i, due)
            i += 1
        measured = (time.perf_counter_ns() - self.start_ns) / 1e9
        deadline = time.monotonic() + drain
        await wait_until(lambda: not (self.in_flight or self.backlog), deadline)
        self.queue_labels()
        await wait_until(lambda: not (self.feedback_queue or self.feedback_busy), deadline)
        return self.figures(measured)

    def figures(self, measured: float) -> dict[str, Any]:
        lat = sorted(self.latencies_ns)
        service = sorted(self.service_ns)
        late = sorted(self.late_ns)
        answered = sum(self.statuses.values())
        return {
            "mode": "open",
            "rate": self.rate,
            "duration_s": round(measured, 3),
            "sent": self.sent,
            "answered": answered,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "connection_errors": self.connection_errors,
            "unanswered": self.sent - answered - self.connection_errors,
            "rows_accepted": self.rows_accepted,
            "p50_ms": percentile(lat, 0.50),
            "p95_ms": percentile(lat, 0.95),
            "p99_ms": percentile(lat, 0.99),
            "max_ms": lat[-1] / 1e6 if lat else float("nan"),
            "service_p50_ms": percentile(service, 0.50),
            "service_p99_ms": percentile(service, 0.99),
            "lag_p99_ms": percentile(late, 0.99),
            "lag_max_ms": late[-1] / 1e6 if late else float("nan"),
            "connections_opened": self.opened,
            "max_backlog": self.max_backlog,
            "versions": self.versions,
            "labels_sent": self.labels_sent,
            "labels_accepted": self.labels_accepted,
            "feedback_statuses": {str(k): v for k, v in sorted(self.feedback_statuses.items())},
            "feedback_errors": self.feedback_errors,
            "per_minute": [
                {
                    "minute": m,
                    "sent": v["sent"],
                    "statuses": {str(k): n for k, n in sorted(v["statuses"].items())},
                    "connection_errors": v["errors"],
                    "p50_ms": percentile(sorted(v["latencies_ns"]), 0.50),
                    "p99_ms": percentile(sorted(v["latencies_ns"]), 0.99),
                }
                for m, v in sorted(self.minutes.items())
            ],
            "sample": self.sample.decode("utf-8", "replace"),
        }


async def wait_until(done: Callable[[], bool], deadline: float) -> None:
    """Poll `done` every 50 ms until it holds or time.monotonic() passes `deadline`."""
    while time.monotonic() < deadline:
        if done():
            return
        await asyncio.sleep(0.05)


async def drive_open(args: argparse.Namespace) -> dict[str, Any]:
    """`--rows` is a JSON list of [instance, label] pairs, sent round-robin at `--rate`."""
    rows = json.loads(open(args.rows).read())  # noqa: SIM115, ASYNC230
    return await OpenLoop(args, rows).run(args.duration, args.drain)


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
    parser.add_argument("--connections", type=int, default=1, help="open loop: at most")
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--serve", type=int, help="run the trivial server on this port instead")
    parser.add_argument("--rate", type=float, help="open loop at this many requests/s")
    parser.add_argument("--rows", help="open loop: JSON file, a list of [instance, label]")
    parser.add_argument("--id-prefix", default="load-", help="open loop: row ids")
    parser.add_argument("--feedback-url", help="open loop: send the labels of answered rows")
    parser.add_argument("--labels-batch", type=int, default=50)
    parser.add_argument("--drain", type=float, default=60.0, help="open loop: wait at the end")
    args = parser.parse_args()
    run = uvloop.run if uvloop is not None else asyncio.run
    if args.serve:
        run(serve_trivial(args.serve))
        return
    if args.rate:
        print(json.dumps(run(drive_open(args))))
        return
    print(json.dumps(run(drive(args))))


if __name__ == "__main__":
    main()
