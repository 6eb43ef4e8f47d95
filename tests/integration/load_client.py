"""A load generator run as its own process: `python load_client.py URL SECONDS
CONCURRENCY BODY_FILE`. Each of CONCURRENCY asyncio tasks keeps one HTTP/1.1
connection alive and POSTs the body to /invocations in a loop until SECONDS
have passed; prints one JSON line: requests, answers by status code, errors
(exceptions, by type), and latency percentiles in milliseconds.

Raw asyncio streams rather than an HTTP library: nothing to install, and the
client's own overhead stays small beside the server it measures.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit


async def one_connection(host, port, request, deadline, codes, errors, latencies):
    reader = writer = None
    while time.monotonic() < deadline:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            started = time.perf_counter()
            writer.write(request)
            status_line = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            codes[int(status_line.split()[1])] += 1
        except (OSError, asyncio.IncompleteReadError, IndexError, ValueError) as exc:
            errors[type(exc).__name__] += 1
            if writer is not None:
                writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


async def main(url: str, seconds: float, concurrency: int, body: bytes) -> dict:
    parts = urlsplit(url)
    request = (
        f"POST /invocations HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    codes: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    started = time.monotonic()
    await asyncio.gather(
        *(
            one_connection(parts.hostname, parts.port, request, deadline, codes, errors, latencies)
            for _ in range(concurrency)
        )
    )
    elapsed = time.monotonic() - started
    latencies.sort()

    def percentile(p: float) -> float:
        return round(1000 * latencies[int(p * (len(latencies) - 1))], 2) if latencies else 0.0

    return {
        "requests": len(latencies),
        "seconds": round(elapsed, 1),
        "per_second": round(len(latencies) / elapsed, 1),
        "codes": {str(k): v for k, v in codes.items()},
        "errors": dict(errors),
        "p50_ms": percentile(0.5),
        "p99_ms": percentile(0.99),
    }


if __name__ == "__main__":
    url, seconds, concurrency, body_file = sys.argv[1:5]
    body = Path(body_file).read_bytes()
    print(json.dumps(asyncio.run(main(url, float(seconds), int(concurrency), body))))
