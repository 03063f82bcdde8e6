"""HTTP transitions/s of `cbworkflow serve` against a bare FastAPI app on the same server stack.

    .venv/bin/python bench/bench_http.py [--requests 5000] [--connections 32] [--runs 3] [--instances 2000]
                                         [--store sqlite|postgresql] [--processes 1]

`--processes` (1) `cbworkflow serve --no-worker` processes on one fresh store (`--store`, SQLite by default; rate
limit off, one admin token), each on its own port as behind a balancer, holding
`--instances` started instances of a template whose phone call loops on itself (`again`). The client is raw
asyncio streams in this process: `--connections` keep-alive connections, dealt round-robin over the processes'
ports, each writing an HTTP/1.1 request by hand
and reading the answer by its Content-Length (a general HTTP client would cost more than the server). Request n
moves instance n mod `--instances` (`expected_node` given, as a client would), so every request is a real
transition and no two in flight touch one instance.
Baseline, same run: a FastAPI app (one POST route on the same path, parsing the JSON body) answering the bytes of
a real transition answer, served by uvicorn with `cbworkflow.cli.serving.SERVER_OPTIONS` (the stack `serve`
uses), as many processes as `serve`'s, to the same requests from the same client. Per run, after 200 requests
(at most `--requests`) to warm each: requests/s and latency p50 / p99 of both, and the ratios. Also the first
server's VmRSS idle (after start, before any load).
`--out` writes the JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import harness
from bench_inprocess import LOOP, started
from cbworkflow.models.templates import TemplateCreate
from cbworkflow.settings import Settings
from cbworkflow.wiring import SYSTEM, bootstrap, build_services

TOKEN = "bench-http-token-0123456789abcdef"
BARE_APP = """
import json, pathlib
from fastapi import FastAPI, Response
BODY = pathlib.Path(__file__).with_name("answer.json").read_bytes()
app = FastAPI()
@app.get("/healthz")
async def healthz() -> dict:
    return {"status": "ok"}
@app.post("/api/instances/{instance_id}/transition")
async def transition(instance_id: str, body: dict) -> Response:
    return Response(content=BODY, media_type="application/json")
"""
BARE_MAIN = """
import sys, uvicorn
from cbworkflow.cli.serving import SERVER_OPTIONS
sys.path.insert(0, sys.argv[1])
uvicorn.run("bare_app:app", host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", log_config=None,
            access_log=False, **SERVER_OPTIONS)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def request(instance_id: str, port: int) -> bytes:
    body = json.dumps({"outcome": "again", "expected_node": "call"}).encode()
    head = (
        f"POST /api/instances/{instance_id}/transition HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One HTTP/1.1 answer with a Content-Length: its status and body."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


async def drive(ports: list[int], requests: list[bytes], connections: int) -> dict[str, float]:
    """Every request once over `connections` keep-alive connections, dealt round-robin over `ports`; requests/s
    and latency p50 / p99 in ms."""
    latencies: list[float] = []
    ahead = iter(requests)

    async def one_connection(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for raw in ahead:
                began = time.perf_counter()
                writer.write(raw)
                status, body = await answer(reader)
                latencies.append((time.perf_counter() - began) * 1000)
                if status != 200:
                    raise RuntimeError(f"HTTP {status}: {body[:300]!r}")
        finally:
            writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(one_connection(ports[k % len(ports)]) for k in range(connections)))
    elapsed = time.perf_counter() - began
    return {
        "per_s": round(len(requests) / elapsed, 1),
        "p50_ms": round(harness.percentile(latencies, 0.5), 2),
        "p99_ms": round(harness.percentile(latencies, 0.99), 2),
    }


async def one_answer(port: int, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        status, body = await answer(reader)
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {body[:300]!r}")
        return body
    finally:
        writer.close()


def wait_healthy(proc: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited ({proc.returncode})")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if sock.recv(100).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the server did not answer /healthz within 60 s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def spawned(
    commands: list[list[str]], ports: list[int], env: dict[str, str], cwd: Path, procs: list[subprocess.Popen[bytes]]
) -> list[subprocess.Popen[bytes]]:
    """One process per command, each answering /healthz on its port (all added to `procs` as they start)."""
    made = []
    for command in commands:
        made.append(subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        procs.append(made[-1])
    for proc, port in zip(made, ports, strict=True):
        wait_healthy(proc, port)
    return made


async def prepare(place: harness.Place, instances: int) -> list[str]:
    settings = Settings(data_dir=place.folder, database_url=place.url, admin_token=TOKEN)
    services = await build_services(settings)
    try:
        await bootstrap(services, load_example=False)
        await services.templates.create(SYSTEM, TemplateCreate.model_validate(LOOP))
        return [t.instance_id for t in await started(services, instances)]
    finally:
        await services.store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000, help="per run, each side")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--instances", type=int, default=2000)
    parser.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--processes", type=int, default=1, help="serve processes (and bare ones), one port each")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    try:
        import uvloop

        # the client's own overhead kept low: it shares the machine with the server
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    work = Path(tempfile.mkdtemp(prefix="cbw-bench-http-"))
    place = harness.Place(args.store, work)
    procs: list[subprocess.Popen[bytes]] = []
    result: dict[str, Any] = {
        "requests": args.requests,
        "connections": args.connections,
        "store": args.store,
        "processes": args.processes,
        "runs": [],
    }
    try:
        ids = asyncio.run(prepare(place, args.instances))
        place.settle()
        ports = [free_port() for _ in range(args.processes)]
        bare_ports = [free_port() for _ in range(args.processes)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("CBW_")}
        env |= {"CBW_DATA_DIR": str(place.folder), "CBW_ADMIN_TOKEN": TOKEN, "CBW_RATE_LIMIT": "0"}
        if place.pg:
            env["CBW_DATABASE_URL"] = place.url
        cbworkflow = str(Path(sys.executable).parent / "cbworkflow")
        servers = spawned(
            [[cbworkflow, "serve", "--host", "127.0.0.1", "--port", str(port), "--no-worker"] for port in ports],
            ports,
            env,
            place.folder,
            procs,
        )
        time.sleep(1)
        result["server_idle_rss_mb"] = round(harness.status_mb(servers[0].pid, "VmRSS"), 1)
        body = asyncio.run(one_answer(ports[0], request(ids[0], ports[0])))
        result["answer_bytes"] = len(body)
        (work / "answer.json").write_bytes(body)
        (work / "bare_app.py").write_text(BARE_APP)
        (work / "bare_main.py").write_text(BARE_MAIN)
        bare_main = [sys.executable, str(work / "bare_main.py"), str(work)]
        bares = spawned([[*bare_main, str(port)] for port in bare_ports], bare_ports, env, work, procs)
        result["bare_idle_rss_mb"] = round(harness.status_mb(bares[0].pid, "VmRSS"), 1)
        n = 1
        for _ in range(args.runs):
            load = harness.loadavg()
            figures: dict[str, Any] = {"load": load}
            for label, at in (("serve", ports), ("bare", bare_ports)):
                warm = [request(ids[(n + k) % len(ids)], at[0]) for k in range(min(200, args.requests))]
                n += len(warm)
                asyncio.run(drive(at, warm, args.connections))
                batch = [request(ids[(n + k) % len(ids)], at[0]) for k in range(args.requests)]
                n += len(batch)
                figures[label] = asyncio.run(drive(at, batch, args.connections))
            figures["throughput_ratio"] = round(figures["serve"]["per_s"] / figures["bare"]["per_s"], 3)
            figures["p99_ratio"] = round(figures["serve"]["p99_ms"] / figures["bare"]["p99_ms"], 2)
            result["runs"].append(figures)
            print(f"  http: {json.dumps(figures)}", flush=True)
        result["server_peak_rss_mb"] = round(max(harness.status_mb(server.pid, "VmHWM") for server in servers), 1)
        moved = place.query("SELECT count(*) FROM events WHERE type = 'user_action'")[0][0]
        sent = 1 + args.runs * (min(200, args.requests) + args.requests)
        if moved != sent:  # every request to `serve` must have been a transition
            raise RuntimeError(f"{sent} transitions asked of the server, {moved} stored")
        result["transitions_stored"] = moved
    finally:
        for proc in procs:
            stop(proc)
        place.drop()
        shutil.rmtree(work, ignore_errors=True)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}))


if __name__ == "__main__":
    sys.exit(main())
