"""A closed-loop HTTP/1.1 load generator, run as its own process.

    python loadgen.py --port P --path /invocations --bodies bodies.json \
        --concurrency 16 --warmup 3 --duration 15

`concurrency` keep-alive connections each send a request, wait for the whole
answer and send the next (cycling through the bodies), for `warmup` seconds
unmeasured and then `duration` seconds measured. Bounded in time and in
count (--max-requests), on loopback only. Prints one JSON object: requests,
errors, requests/s, the latencies' percentiles, and the CPU share this
process used (near 1.0 means the client, not the server, was the limit).

Raw asyncio protocols on uvloop rather than an HTTP client library: a client
library's own per-request cost would cap the figures of the faster servers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_report import latency_summary  # noqa: E402

LOOPBACK = ("127.0.0.1", "localhost", "::1")


class Response(asyncio.Protocol):
    """One connection; `request()` sends bytes and waits for one whole response."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[int] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection closed"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        status = self.parse()
        if status is not None and self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(status)

    def parse(self) -> int | None:
        """The status once the buffer holds one whole response (which it drops)."""
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        status = int(head[0].split(" ", 2)[1])
        headers = {}
        for line in head[1:]:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        start = end + 4
        if "content-length" in headers:
            stop = start + int(headers["content-length"])
            if len(self.buffer) < stop:
                return None
            del self.buffer[:stop]
            return status
        if headers.get("transfer-encoding", "").lower() == "chunked":
            position = start
            while True:
                line_end = self.buffer.find(b"\r\n", position)
                if line_end < 0:
                    return None
                size = int(bytes(self.buffer[position:line_end]).split(b";")[0], 16)
                position = line_end + 2 + size + 2
                if len(self.buffer) < position:
                    return None
                if size == 0:
                    del self.buffer[:position]
                    return status
        del self.buffer[:start]  # no body
        return status

    async def request(self, data: bytes) -> int:
        self.waiter = asyncio.get_running_loop().create_future()
        assert self.transport is not None
        self.transport.write(data)
        return await self.waiter


def requests_for(host: str, port: int, path: str, bodies: list[str]) -> list[bytes]:
    out = []
    for body in bodies:
        raw = body.encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(raw)}\r\n\r\n"
        )
        out.append(head.encode() + raw)
    return out


async def run(args: argparse.Namespace) -> dict[str, object]:
    bodies = json.loads(Path(args.bodies).read_text())
    requests = requests_for(args.host, args.port, args.path, bodies)
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    measure_from = started + args.warmup
    measure_until = measure_from + args.duration
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0
    sent = 0
    cpu_start: list[float] = []

    async def connect() -> Response:
        _, protocol = await loop.create_connection(Response, args.host, args.port)
        return protocol

    async def worker(index: int) -> None:
        nonlocal errors, sent
        connection = await connect()
        i = index
        while True:
            now = time.perf_counter()
            if now >= measure_until or sent >= args.max_requests:
                break
            if now >= measure_from and not cpu_start:
                cpu_start.append(time.process_time())
            data = requests[i % len(requests)]
            i += 1
            sent += 1
            t0 = time.perf_counter()
            try:
                status = await connection.request(data)
            except (ConnectionError, OSError):
                status = -1
                connection = await connect()
            t1 = time.perf_counter()
            if measure_from <= t0 and t1 <= measure_until:
                latencies.append(t1 - t0)
                statuses[status] = statuses.get(status, 0) + 1
                if status != 200:
                    errors += 1
        if connection.transport is not None:
            connection.transport.close()

    await asyncio.gather(*(worker(i) for i in range(args.concurrency)))
    cpu = time.process_time() - (cpu_start[0] if cpu_start else 0.0)
    measured = min(args.duration, max(time.perf_counter() - measure_from, 1e-9))
    ok = len(latencies) - errors
    return {
        "requests": len(latencies),
        "errors": errors,
        "statuses": {str(k): v for k, v in statuses.items()},
        "seconds": measured,
        "rps": ok / measured,
        "client_cpu_share": cpu / measured,
        "concurrency": args.concurrency,
        **latency_summary(latencies),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--bodies", required=True, help="a JSON list of request bodies (text)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--max-requests", type=int, default=5_000_000)
    args = parser.parse_args()
    if args.host not in LOOPBACK:
        parser.error("loopback only: --host must be 127.0.0.1, localhost or ::1")
    if not 0 < args.duration <= 600 or not 0 <= args.warmup <= 120:
        parser.error("--duration must be in (0, 600] and --warmup in [0, 120] seconds")
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
