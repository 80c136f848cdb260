#!/usr/bin/env python3
"""The chaos run (issue 9): a local deployment under `tandemn bench` load while its
backends are killed, preempted and stalled, and its router is sent slow, stalled and
malformed clients; then checks that every request ended cleanly, that no request that
had not started streaming failed because of a backend fault, that the router's memory
and file descriptors came back, and that the ledger matches the provider's billing.

Driven by chaos.sh (which builds the binary); Python standard library only.
Exit status: 0 when every check passes, 1 when one fails, 2 when the run itself could
not be set up.
"""

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SERVICE = "chaos"
MODEL = "mock-model"

CONFIG = """\
service_name: {service}
model: {model}
gpu: L4
serverless_provider: local
spots_cloud: local
scaling:
  spot: {{min_replicas: 1, max_replicas: 3, target_qps: 100, upscale_delay: 0, downscale_delay: 10, demand_window: 5}}
  serverless: {{concurrency: 64, scaledown_window: 5, workers_max: 8}}
router: {{listen: 127.0.0.1:0, spot_capacity: 64, idle_timeout: 10}}
local: {{spot_boot_secs: 2, cold_start_secs: 0.5}}
"""

# Refusals that mean "too much load right now", not "a backend broke": reported, but
# they do not fail the backend-fault check.
LOAD_SHEDDING = {"router_overloaded", "no_capacity"}

# How far the router's footprint may stay above its warmed-up baseline once idle again:
# allocator caches and pooled upstream connections are not leaks.
RSS_SLACK_MIB = 32
RSS_SLACK_RATIO = 0.25
FD_SLACK = 16
SETTLE_SECS = 90
# How long a slowloris connection trickles its head before giving up by itself.
SLOWLORIS_SECS = 40


class Failure(Exception):
    """The run could not be set up (not a failed check)."""


def log(message):
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", flush=True)


class Deployment:
    def __init__(self, binary, work, bench_binary=None):
        self.binary = binary
        # The load can come from another build's `tandemn bench` (one that reports stages).
        self.bench_binary = bench_binary or binary
        self.work = work
        self.home = work / "home"
        self.home.mkdir()
        self.env = dict(os.environ, TANDEMN_HOME=str(self.home), HOME=str(self.home))
        self.env.pop("TANDEMN_API_KEY", None)
        config = work / "chaos.yaml"
        config.write_text(CONFIG.format(service=SERVICE, model=MODEL))
        self.out = open(work / "deploy.out", "w")
        self.process = subprocess.Popen(
            [binary, "deploy", "--config", str(config)],
            stdout=self.out, stderr=subprocess.STDOUT, env=self.env, stdin=subprocess.DEVNULL,
        )
        self.pid = self.process.pid
        self.endpoint, self.key = self._wait_for_endpoint()
        host, port = self.endpoint.removeprefix("http://").split(":")
        self.address = (host, int(port))

    def _wait_for_endpoint(self):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise Failure(f"deploy exited with {self.process.returncode}: {self.log_tail()}")
            lines = (self.work / "deploy.out").read_text().splitlines()
            endpoint = next((l.split()[1] for l in lines if l.startswith("endpoint")), None)
            key = next((l.split()[2] for l in lines if l.startswith("api key")), None)
            if endpoint and key:
                return endpoint.removesuffix("/v1"), key
            time.sleep(0.1)
        raise Failure(f"deploy printed no endpoint within 60 s: {self.log_tail()}")

    def log_tail(self, lines=15):
        text = (self.work / "deploy.out").read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def tandemn(self, *args, check=True, timeout=60):
        result = subprocess.run(
            [self.binary, *args], capture_output=True, text=True, env=self.env, timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if check and result.returncode != 0:
            raise Failure(f"tandemn {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def status(self):
        return json.loads(self.tandemn("status", "--service-name", SERVICE, "--json").stdout)

    def alive(self):
        return self.process.poll() is None

    def backend_pids(self):
        """Live spot replica pids and the serverless endpoint's pid, from `status --json`."""
        status = self.status()
        spot = [
            r["pid"] for r in status.get("replicas", [])
            if isinstance(r.get("pid"), int) and r.get("phase") in ("booting", "ready", "draining")
        ]
        serverless = status.get("serverless", {}).get("pid")
        return spot, serverless if isinstance(serverless, int) else None

    def wait_ready(self, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            replicas = self.status().get("replicas", [])
            if any(r.get("phase") == "ready" for r in replicas):
                return
            time.sleep(0.5)
        raise Failure("no spot replica became ready within 60 s")

    def footprint(self):
        """The deploy process's (router's) resident memory in KiB and its open fds."""
        rss = 0
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
        return rss, len(os.listdir(f"/proc/{self.pid}/fd"))


def bench(deployment, streams, seconds, out):
    """`tandemn bench` as a child; its JSON report goes to `out`."""
    return subprocess.Popen(
        [
            deployment.bench_binary, "bench", "--url", deployment.endpoint, "--api-key", deployment.key,
            "--model", MODEL, "--concurrency", str(streams), "--duration", f"{seconds}s",
            "--isl", "64", "--osl", "64", "--timeout", "60s", "--threads", "1", "--json", "--out", str(out),
        ],
        stdout=subprocess.DEVNULL, stderr=open(str(out) + ".stderr", "w"), env=deployment.env,
        stdin=subprocess.DEVNULL,
    )


def chat_request(key, max_tokens=2000, stream=True):
    body = json.dumps({
        "model": MODEL, "stream": stream, "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": "hello"}],
    }).encode()
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: chaos\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


def malformed_requests(key):
    """(name, bytes) of requests no router should choke on."""
    auth = f"Authorization: Bearer {key}\r\n"
    post = lambda body, extra="": (  # noqa: E731
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: chaos\r\n{auth}{extra}"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}"
    ).encode()
    return [
        ("garbage request line", b"\x16\x03\x01\x02\x00 NOT HTTP AT ALL\r\n\r\n"),
        ("unknown HTTP version", b"GET /v1/models HTTP/9.9\r\nHost: chaos\r\n\r\n"),
        ("bad JSON body", post("{\"model\": \"mock-model\", \"messages\": [")),
        ("JSON that is not an object", post("[1, 2, 3]")),
        ("body shorter than Content-Length", post("{}").replace(b"Content-Length: 2", b"Content-Length: 900")),
        ("negative Content-Length", post("{}").replace(b"Content-Length: 2", b"Content-Length: -5")),
        ("two Content-Lengths", post("{}", "Content-Length: 7\r\n")),
        ("bad chunk size", (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: chaos\r\n{auth}"
            "Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"
        ).encode()),
        ("huge header (256 KiB)", (
            f"GET /v1/models HTTP/1.1\r\nHost: chaos\r\n{auth}X-Big: {'a' * 262144}\r\n\r\n"
        ).encode()),
        ("huge header (1 MiB)", (
            f"GET /v1/models HTTP/1.1\r\nHost: chaos\r\n{auth}X-Big: {'a' * 1048576}\r\n\r\n"
        ).encode()),
        ("5,000 headers", (
            f"GET /v1/models HTTP/1.1\r\nHost: chaos\r\n{auth}"
            + "".join(f"X-H{i}: v\r\n" for i in range(5000)) + "\r\n"
        ).encode()),
        ("absolute-form target", f"GET http://169.254.169.254/v1/models HTTP/1.1\r\nHost: chaos\r\n{auth}\r\n".encode()),
        ("dot segments", f"GET /v1/../router/config HTTP/1.1\r\nHost: chaos\r\n{auth}\r\n".encode()),
        ("encoded dot segments", f"GET /v1/%2e%2e/router/config HTTP/1.1\r\nHost: chaos\r\n{auth}\r\n".encode()),
        ("no API key", b"GET /v1/models HTTP/1.1\r\nHost: chaos\r\n\r\n"),
        ("pipelined junk after a valid request", (
            f"GET /v1/models HTTP/1.1\r\nHost: chaos\r\n{auth}\r\n".encode()
            + b"\x00\x01\x02 junk junk\r\n\r\nGET / HTTP/1.1\r\n\r\n"
        )),
    ]


def send_malformed(address, name, payload, timeout=20):
    """Sends one malformed request; returns (name, verdict, detail)."""
    started = time.monotonic()
    try:
        with socket.create_connection(address, timeout=timeout) as conn:
            conn.settimeout(timeout)
            try:
                conn.sendall(payload)
            except OSError:
                pass  # the router may close while a huge head is still being sent
            data = b""
            try:
                while b"\r\n\r\n" not in data and time.monotonic() - started < timeout:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            except socket.timeout:
                return name, "hang", f"no answer and still open after {timeout} s"
            except ConnectionResetError:
                return name, "closed", f"reset after {time.monotonic() - started:.1f} s"
    except OSError as error:
        return name, "error", f"could not connect: {error}"
    if not data:
        return name, "closed", f"closed without an answer after {time.monotonic() - started:.1f} s"
    status_line = data.split(b"\r\n", 1)[0].decode(errors="replace")
    parts = status_line.split()
    code = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    reason = next(
        (l.split(b":", 1)[1].strip().decode() for l in data.split(b"\r\n") if l.lower().startswith(b"x-tandemn-error:")),
        "",
    )
    verdict = "answered" if 200 <= code < 500 else "server_error"
    return name, verdict, f"{code} {reason}".strip()


class Faults:
    """Injects faults at random until stopped; every fault is logged as an event."""

    def __init__(self, deployment, rng, sighup):
        self.d = deployment
        self.rng = rng
        self.kinds = ["kill_spot", "kill_serverless", "preempt", "stall", "slowloris", "stalled_reader", "malformed"]
        if sighup:
            self.kinds.append("sighup")
        self.events = []
        self.malformed_results = []
        self.slowloris_results = []
        self.stopped_pids = set()
        self.sockets = []
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.threads = []
        self.started = time.monotonic()

    def event(self, kind, detail):
        with self.lock:
            self.events.append({"t": round(time.monotonic() - self.started, 1), "fault": kind, "detail": detail})
        log(f"{kind}: {detail}")

    def spawn(self, target, *args):
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self.threads.append(thread)

    def run(self, until):
        # Each kind once first, in random order, then at random; short runs space the
        # first round so that it fits.
        order = self.rng.sample(self.kinds, len(self.kinds))
        first_gap = max(0.5, min(5.0, (until - time.monotonic()) / (len(self.kinds) + 1)))
        while time.monotonic() < until and not self.done.is_set():
            kind = order.pop() if order else self.rng.choice(self.kinds)
            try:
                getattr(self, kind)()
            except Exception as error:  # a fault that could not be injected is an event too
                self.event(kind, f"not injected: {error}")
            self.done.wait(self.rng.uniform(first_gap / 2, first_gap) if order else self.rng.uniform(2.0, 5.0))

    def pick_backend(self, tier):
        spot, serverless = self.d.backend_pids()
        if tier == "spot":
            return self.rng.choice(spot) if spot else None
        return serverless

    def kill_spot(self):
        pid = self.pick_backend("spot")
        if pid is None:
            return self.event("kill_spot", "no live spot replica")
        os.kill(pid, signal.SIGKILL)
        self.event("kill_spot", f"SIGKILL spot replica pid {pid}")

    def kill_serverless(self):
        pid = self.pick_backend("serverless")
        if pid is None:
            return self.event("kill_serverless", "no serverless process")
        os.kill(pid, signal.SIGKILL)
        self.event("kill_serverless", f"SIGKILL serverless pid {pid}")

    def preempt(self):
        result = self.d.tandemn("preempt", SERVICE, check=False)
        self.event("preempt", (result.stdout or result.stderr).strip())

    def stall(self):
        spot, serverless = self.d.backend_pids()
        candidates = spot + ([serverless] if serverless else [])
        if not candidates:
            return self.event("stall", "no backend process")
        pid = self.rng.choice(candidates)
        secs = self.rng.uniform(2.0, 6.0)
        os.kill(pid, signal.SIGSTOP)
        with self.lock:
            self.stopped_pids.add(pid)
        self.event("stall", f"SIGSTOP pid {pid} for {secs:.1f} s")
        self.spawn(self._resume, pid, secs)

    def _resume(self, pid, secs):
        self.done.wait(secs)
        self.resume(pid)

    def resume(self, pid):
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
        with self.lock:
            self.stopped_pids.discard(pid)

    def slowloris(self):
        count = 16
        self.event("slowloris", f"{count} connections trickling a request head, one byte every 0.5 s, up to {SLOWLORIS_SECS} s")
        for _ in range(count):
            self.spawn(self._slowloris_one)

    def _slowloris_one(self):
        head = chat_request(self.d.key).split(b"\r\n\r\n")[0] + b"\r\n"
        started = time.monotonic()
        outcome = f"still open after {SLOWLORIS_SECS} s"
        try:
            conn = socket.create_connection(self.d.address, timeout=5)
            with self.lock:
                self.sockets.append(conn)
            conn.settimeout(0.5)
            for i in range(len(head) * 4):
                # Not cut short by the end of the faults: the point is how long it lasts.
                if time.monotonic() - started > SLOWLORIS_SECS:
                    break
                try:
                    conn.sendall(head[i % len(head):i % len(head) + 1])
                except OSError:
                    outcome = f"closed by the router after {time.monotonic() - started:.1f} s"
                    break
                try:
                    answer = conn.recv(4096)
                    status = answer.split(b"\r\n", 1)[0].decode(errors="replace")
                    what = f"answered `{status}`" if answer else "closed by the router"
                    outcome = f"{what} after {time.monotonic() - started:.1f} s"
                    break
                except socket.timeout:
                    pass
                except OSError:
                    outcome = f"reset by the router after {time.monotonic() - started:.1f} s"
                    break
            conn.close()
        except OSError as error:
            outcome = f"could not connect: {error}"
        with self.lock:
            self.slowloris_results.append(outcome)

    def stalled_reader(self):
        count = 8
        self.event("stalled_reader", f"{count} streamed requests (max_tokens 4000) that are never read, for 20 s")
        for _ in range(count):
            self.spawn(self._stalled_reader_one)

    def _stalled_reader_one(self):
        try:
            conn = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            conn.settimeout(5)
            conn.connect(self.d.address)
            with self.lock:
                self.sockets.append(conn)
            conn.sendall(chat_request(self.d.key, max_tokens=4000))
            self.done.wait(20)
            conn.close()
        except OSError:
            pass

    def malformed(self):
        cases = malformed_requests(self.d.key)
        self.event("malformed", f"{len(cases)} malformed requests")
        self.spawn(self._malformed_all, cases)

    def _malformed_all(self, cases):
        for name, payload in cases:
            result = send_malformed(self.d.address, name, payload)
            with self.lock:
                self.malformed_results.append(result)

    def sighup(self):
        os.kill(self.d.pid, signal.SIGHUP)
        time.sleep(2)
        state = "still running" if self.d.alive() else exit_text(self.d.process.returncode)
        self.event("sighup", f"SIGHUP to deploy pid {self.d.pid}: {state} 2 s later")

    def stop(self):
        self.done.set()
        with self.lock:
            paused = list(self.stopped_pids)
        for pid in paused:
            self.resume(pid)
        for thread in self.threads:
            thread.join(timeout=SLOWLORIS_SECS + 10)
        with self.lock:
            for conn in self.sockets:
                try:
                    conn.close()
                except OSError:
                    pass


class Monitor:
    """Samples the router's backend table every second: how long it had nothing to route to."""

    def __init__(self, deployment):
        self.d = deployment
        self.samples = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        started = time.monotonic()
        while not self.done.wait(1.0):
            try:
                backends = (self.d.status().get("router") or {}).get("backends") or []
            except (Failure, ValueError, subprocess.TimeoutExpired):
                continue
            usable = {"spot": 0, "serverless": 0}
            for b in backends:
                if b.get("state") == "ready" and b.get("circuit") == "closed":
                    usable[b.get("tier", "?")] = usable.get(b.get("tier", "?"), 0) + 1
            self.samples.append({"t": round(time.monotonic() - started, 1), **usable})

    def stop(self):
        self.done.set()
        self.thread.join(timeout=30)

    def describe(self):
        if not self.samples:
            return "no samples"
        none = sum(1 for s in self.samples if s["spot"] + s["serverless"] == 0)
        no_spot = sum(1 for s in self.samples if s["spot"] == 0)
        return f"{none} of {len(self.samples)} one-second samples had no usable backend, {no_spot} no usable spot replica"


def settle(deployment, baseline):
    """Waits (bounded) for the router's footprint to come back within tolerance."""
    rss_limit = baseline[0] * (1 + RSS_SLACK_RATIO) + RSS_SLACK_MIB * 1024
    fd_limit = baseline[1] + FD_SLACK
    deadline = time.monotonic() + SETTLE_SECS
    now = deployment.footprint()
    while time.monotonic() < deadline:
        now = deployment.footprint()
        if now[0] <= rss_limit and now[1] <= fd_limit:
            break
        time.sleep(1)
    return now, rss_limit, fd_limit


def idle_footprint(deployment, secs=8):
    """The footprint once it has been stable for a few seconds (bounded)."""
    deadline = time.monotonic() + 60
    last, stable_since = deployment.footprint(), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - stable_since < secs:
        time.sleep(1)
        now = deployment.footprint()
        if now[1] != last[1]:
            stable_since = time.monotonic()
        last = now
    return last


def ledger_matches(deployment, binary, env):
    """`cost --json` against billing.jsonl, the way tests/local_deployment.rs compares them."""
    cost = json.loads(deployment.tandemn("cost", "--service-name", SERVICE, "--json").stdout)
    record = deployment.home / "local" / SERVICE / "billing.jsonl"
    spot_secs = serverless_secs = 0
    for line in (record.read_text() if record.exists() else "").splitlines():
        bill = json.loads(line)
        secs = -(-(bill["stopped_unix_ms"] - bill["started_unix_ms"]) // 1000)
        if bill["tier"] == "spot":
            spot_secs += secs
        else:
            serverless_secs += secs
    gpus = json.loads(subprocess.run(
        [binary, "show-gpus", "--gpu", "L4", "--json"], capture_output=True, text=True, env=env, check=True,
    ).stdout)
    spot_price = next(s["spot_usd_per_hour"] for s in gpus["spot"] if s["cloud"] == "aws")
    serverless_price = next(s["usd_per_hour"] for s in gpus["serverless"] if s["provider"] == gpus["cheapest_serverless"])
    cents = lambda usd: round(usd * 100)  # noqa: E731
    problems = []
    for tier, secs, price in (("spot", spot_secs, spot_price), ("serverless", serverless_secs, serverless_price)):
        billed = cost[tier]["billed_secs"]
        if billed != secs:
            problems.append(f"{tier}: ledger {billed} s, billing record {secs} s")
        if cents(cost[tier]["usd"]) != cents(secs / 3600 * price):
            problems.append(f"{tier}: ledger ${cost[tier]['usd']:.4f}, billing record ${secs / 3600 * price:.4f}")
    evidence = f"spot {cost['spot']['billed_secs']} s / record {spot_secs} s; " \
        f"serverless {cost['serverless']['billed_secs']} s / record {serverless_secs} s"
    return not problems, "; ".join(problems) or evidence


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", required=True)
    parser.add_argument("--bench-bin", default=None, help="the `tandemn` whose `bench` makes the load (default --bin)")
    parser.add_argument("--duration", type=int, default=180, help="seconds of load (default 180)")
    parser.add_argument("--streams", type=int, default=256, help="concurrent streams (default 256)")
    parser.add_argument("--sighup", action="store_true", help="also send SIGHUP to the deploy process")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--keep", default=None, help="copy logs and results into this folder")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="tandemn-chaos-"))
    log(f"seed {args.seed}, {args.streams} streams for {args.duration} s, work folder {work}")
    deployment = None
    try:
        deployment = Deployment(args.bin, work, args.bench_bin)
        return run(args, rng, work, deployment)
    except Failure as error:
        log(f"the run could not be set up: {error}")
        return 2
    finally:
        if deployment and deployment.alive():
            deployment.tandemn("destroy", "--service-name", SERVICE, check=False)
            try:
                deployment.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                deployment.process.kill()
        if args.keep:
            keep = Path(args.keep)
            shutil.rmtree(keep, ignore_errors=True)
            shutil.copytree(work, keep, ignore=shutil.ignore_patterns("state.db*"))
            log(f"logs and results kept in {keep}")
        shutil.rmtree(work, ignore_errors=True)


def run(args, rng, work, d):
    log(f"deployed: {d.endpoint} (deploy pid {d.pid})")
    d.wait_ready()
    # Baseline after a fault-free warm-up at the same concurrency: allocator caches and
    # connection pools are as big as the load makes them before any fault.
    pristine = d.footprint()
    warm = bench(d, args.streams, 10, work / "warmup.json")
    warm.wait()
    d.wait_ready()
    baseline = idle_footprint(d)
    log(f"baseline after warm-up: RSS {baseline[0] / 1024:.1f} MiB, {baseline[1]} fds "
        f"(before warm-up: {pristine[0] / 1024:.1f} MiB, {pristine[1]} fds)")

    load = bench(d, args.streams, args.duration, work / "bench.json")
    monitor = Monitor(d)
    faults = Faults(d, rng, args.sighup)
    # Faults stop 10 s before the load does, so the last requests show recovery.
    injector = threading.Thread(target=faults.run, args=(time.monotonic() + max(args.duration - 10, 5),))
    time.sleep(min(3, args.duration / 4))
    injector.start()
    injector.join()
    faults.stop()
    load.wait(timeout=args.duration + 120)
    monitor.stop()
    alive = d.alive()
    log(f"load finished; deploy process {'running' if alive else exit_text(d.process.returncode)}")

    checks = []
    report = json.loads((work / "bench.json").read_text()) if (work / "bench.json").exists() else None
    checks.append(("router survived the run", alive,
                   "deploy process running" if alive else f"deploy {exit_text(d.process.returncode)}: {d.log_tail(3)}"))
    if report is None:
        checks.append(("bench report", False, (work / "bench.json.stderr").read_text()[-500:]))
    else:
        unclear, backend_fault, shed = {}, {}, {}
        for what, n in report["failures"].items():
            stage, kind, *reason = what.split(" ")
            reason = reason[0] if reason else ""
            clear = (stage == "error_status" and reason) or kind == "stream_error"
            if not clear:
                unclear[what] = n
            if not stage_started(stage):
                (shed if reason in LOAD_SHEDDING else backend_fault)[what] = n
        total = report["requests"]
        checks.append((
            "every request completed or got a clear error", not unclear,
            f"{report['succeeded']} of {total} completed; unclear: {fmt(unclear)}; all failures: {fmt(report['failures'])}",
        ))
        checks.append((
            "no failure before streaming from a backend fault", not backend_fault,
            f"backend faults before streaming: {fmt(backend_fault)}; load shedding (not counted): {fmt(shed)}; "
            f"router table: {monitor.describe()}",
        ))
    malformed_bad = [m for m in faults.malformed_results if m[1] not in ("answered", "closed")]
    checks.append((
        "malformed requests get a 4xx or a close, never a 5xx or a hang", bool(faults.malformed_results) and not malformed_bad,
        malformed_summary(faults.malformed_results),
    ))
    cut_off = [o for o in faults.slowloris_results if not o.startswith("still open")]
    checks.append((
        "slow request heads are cut off (slowloris)",
        bool(faults.slowloris_results) and len(cut_off) == len(faults.slowloris_results),
        f"{len(cut_off)} of {len(faults.slowloris_results)} closed or answered by the router within {SLOWLORIS_SECS} s"
        + (f" ({sorted(set(o.split(' after ')[0] for o in cut_off))})" if cut_off else ""),
    ))
    if alive:
        now, rss_limit, fd_limit = settle(d, baseline)
        ok = now[0] <= rss_limit and now[1] <= fd_limit
        checks.append((
            "router RSS and fds back to baseline", ok,
            f"RSS {baseline[0] / 1024:.1f} -> {now[0] / 1024:.1f} MiB (limit {rss_limit / 1024:.1f}), "
            f"fds {baseline[1]} -> {now[1]} (limit {fd_limit}) after up to {SETTLE_SECS} s idle",
        ))
        d.tandemn("destroy", "--service-name", SERVICE, timeout=700)
        d.process.wait(timeout=700)
    else:
        checks.append(("router RSS and fds back to baseline", False, "not measurable: the router died"))
        # `destroy` closes a dead deployment's records, as a user would after a crash.
        d.tandemn("destroy", "--service-name", SERVICE, check=False, timeout=120)
    ok, evidence = ledger_matches(d, args.bin, d.env)
    checks.append(("ledger matches the billing record", ok, evidence))

    results = {
        "seed": args.seed, "streams": args.streams, "duration_secs": args.duration,
        "bench": report, "events": faults.events, "slowloris": faults.slowloris_results,
        "malformed": faults.malformed_results, "baseline": baseline, "backends": monitor.samples,
        "checks": [{"check": c, "pass": bool(p), "evidence": e} for c, p, e in checks],
    }
    (work / "chaos.json").write_text(json.dumps(results, indent=2))
    summary(report, faults, checks)
    return 0 if all(p for _, p, _ in checks) else 1


def exit_text(code):
    if code is not None and code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exited with {code}"


def stage_started(stage):
    return stage in ("before_first_event", "mid_stream")


def malformed_summary(results):
    """`case: outcome ×n` per case and outcome, in the order first seen; timings dropped."""
    counts = {}
    for name, verdict, detail in results:
        outcome = detail.split(" after ")[0] if verdict == "closed" else f"{verdict} {detail}"
        counts[(name, outcome)] = counts.get((name, outcome), 0) + 1
    return "; ".join(f"{name}: {outcome} ×{n}" for (name, outcome), n in counts.items()) or "none sent"


def fmt(counts):
    return ", ".join(f"{k} ×{v}" for k, v in sorted(counts.items())) or "none"


def summary(report, faults, checks):
    print()
    if report:
        print(f"load: {report['requests']} requests, {report['succeeded']} ok, {report['failed']} failed, "
              f"{report['requests_per_sec']:.1f} req/s, TTFT p50/p99 {report['ttft_ms']['p50']:.0f}/"
              f"{report['ttft_ms']['p99']:.0f} ms, served by {fmt(report['tiers'])}")
    kinds = {}
    for e in faults.events:
        kinds[e["fault"]] = kinds.get(e["fault"], 0) + 1
    print(f"faults injected: {fmt(kinds)}")
    if faults.slowloris_results:
        outcomes = {}
        for o in faults.slowloris_results:
            key = o.split(" after ")[0]
            outcomes[key] = outcomes.get(key, 0) + 1
        print(f"slowloris connections: {fmt(outcomes)}")
    print()
    width = max(len(c) for c, _, _ in checks)
    print(f"{'check':<{width}}  result  evidence")
    for check, passed, evidence in checks:
        print(f"{check:<{width}}  {'PASS' if passed else 'FAIL':<6}  {evidence}")


if __name__ == "__main__":
    sys.exit(main())
