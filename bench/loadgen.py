"""An open-loop, rate-limited HTTP load generator, run in its own process by the bench.

    python bench/loadgen.py --url http://127.0.0.1:PORT/v1/track --key KEY --rate 400 --seconds 5

Request i is due at start + i / rate, whatever happened to the ones before it, and its latency is
measured from that *scheduled* moment to the end of its response: a request that waits for a free
connection, or behind a slow one, counts its wait (no coordinated omission, unlike a closed loop
such as wrk, which sends the next request only once the previous one answered). `--connections`
keep-alive connections share the schedule. Prints one JSON object: the latency percentiles (ms),
the requests sent, answered 2xx and failed, the achieved rate, and `send_lag_p99` (how late the
generator itself sent, beyond the schedule: high when every connection was busy or it ran short of CPU).

The bodies are single track calls of 10,000 customers, as bench/ingest.py's wrk script sends.
"""

import argparse
import asyncio
import json
import sys
import time
from urllib.parse import urlsplit

REQUEST_TIMEOUT = 10.0


def track_body(n: int) -> bytes:
    return (
        b'{"customer_id":"load-%d","event":"purchase","properties":{"item":"T-Shirt","amount":29.99,'
        b'"currency":"USD","n":%d}}' % (n % 10000, n)
    )


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class Run:
    def __init__(self, url: str, key: str, rate: float, seconds: float, connections: int) -> None:
        parts = urlsplit(url)
        self.host, self.port, self.path = parts.hostname, parts.port or 80, parts.path or "/"
        self.key = key
        self.rate = rate
        self.total = int(rate * seconds)
        self.connections = connections
        self.next = 0
        self.latencies: list[float] = []
        self.send_lags: list[float] = []
        self.errors = 0
        self.statuses: dict[int, int] = {}

    def request(self, n: int) -> bytes:
        body = track_body(n)
        return (
            f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Authorization: Bearer {self.key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body

    async def connect(self):
        return await asyncio.wait_for(asyncio.open_connection(self.host, self.port), REQUEST_TIMEOUT)

    async def connection(self, start: float) -> None:
        loop = asyncio.get_running_loop()
        reader, writer = await self.connect()
        while self.next < self.total:
            n = self.next
            self.next += 1
            due = start + n / self.rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self.send_lags.append(max(0.0, loop.time() - due))
            try:
                if writer is None:
                    reader, writer = await self.connect()
                writer.write(self.request(n))
                status, close = await asyncio.wait_for(self.response(reader), REQUEST_TIMEOUT)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
                self.errors += 1
                writer = self.close(writer)
                continue
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if 200 <= status < 300:
                self.latencies.append((loop.time() - due) * 1000)
            else:
                self.errors += 1
            if close:
                writer = self.close(writer)
        self.close(writer)

    @staticmethod
    def close(writer):
        if writer is not None:
            writer.close()
        return None

    @staticmethod
    async def response(reader: asyncio.StreamReader) -> tuple[int, bool]:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        if headers.get("transfer-encoding", "").lower() == "chunked":  # gunicorn, without a Content-Length
            while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                await reader.readexactly(size + 2)
            await reader.readuntil(b"\r\n")
        else:
            await reader.readexactly(int(headers.get("content-length", "0")))
        return status, headers.get("connection", "").lower() == "close"

    async def main(self) -> dict:
        loop = asyncio.get_running_loop()
        start = loop.time() + 0.3  # the connections open before the first request is due
        began = time.monotonic()
        await asyncio.gather(*(self.connection(start) for _ in range(self.connections)))
        wall = time.monotonic() - began - 0.3
        return {
            "rate": self.rate,
            "sent": self.total,
            "ok": len(self.latencies),
            "errors": self.errors,
            "statuses": self.statuses,
            "achieved_rate": len(self.latencies) / wall if wall > 0 else 0.0,
            "p50": percentile(self.latencies, 0.50),
            "p90": percentile(self.latencies, 0.90),
            "p99": percentile(self.latencies, 0.99),
            "max": max(self.latencies, default=None),
            "send_lag_p99": (percentile(self.send_lags, 0.99) or 0.0) * 1000,
            "wall": wall,
        }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", default="")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    if args.rate <= 0 or args.seconds <= 0:
        raise SystemExit("loadgen: --rate and --seconds must be positive")
    result = asyncio.run(Run(args.url, args.key, args.rate, args.seconds, args.connections).main())
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
