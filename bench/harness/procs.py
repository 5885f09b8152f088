"""Starting and talking to the processes of a run: servers, the event source, load processes.

Invariants: every child is started pinned with `taskset` (servers on the server core, source and
load on the load core) in its own process group, with a clean environment (no database or worker
variables leak in from the caller), and is stopped by the object that started it. Load processes
speak JSON lines (see `bench/loadgen`); reads from them always have a deadline.
"""

import json
import os
import selectors
import signal
import socket
import subprocess
import time

BENCH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(BENCH)
LOADGEN = os.path.join(BENCH, "target", "release", "loadgen")
TOKIO_RELAY = os.path.join(BENCH, "target", "release", "tokio-relay")
BENCHSRC = os.path.join(BENCH, "target", "release", "benchsrc")
WORKER = os.path.join(ROOT, "target", "release", "cryptoworker")
VENV_PY = os.path.join(BENCH, ".venv", "bin", "python")
LOGS = os.path.join(BENCH, "results", "logs")

# The worker's configurations measured side by side. The first is the default configuration
# users run: BTC, enrichment on (every new_transaction waits for a get_transaction lookup).
WORKER_VARIANTS = {
    "cryptoworker": {"about": "default configuration: BTC, enrichment on, lookups answered at once",
                     "env": {}, "rpc_delay_ms": 0, "database": False},
    "cryptoworker-2ms": {"about": "default configuration, the daemon answers each lookup after 2 ms",
                         "env": {}, "rpc_delay_ms": 2, "database": False},
    "cryptoworker-w32": {"about": "default configuration but DAEMON_LOOKUP_WINDOW=32 (the old default: 32 connections, no pipelining)",
                         "env": {"DAEMON_LOOKUP_WINDOW": "32"}, "rpc_delay_ms": 0, "database": False},
    "cryptoworker-noenrich": {"about": "BTC with DAEMON_ENRICH=off (no lookups)",
                              "env": {"DAEMON_ENRICH": "off"}, "rpc_delay_ms": 0, "database": False},
    "cryptoworker-db": {"about": "default configuration with PostgreSQL on: events reach clients once committed",
                        "env": {}, "rpc_delay_ms": 0, "database": True},
}
SERVERS = [*WORKER_VARIANTS, "tokio", "node", "python"]
# The coin of the bench stream (pushes, simulator and worker).
BENCH_COIN = "BTC"
# PostgreSQL for the database-on configuration (a fresh database per server run).
PG_ADMIN = os.environ.get("CW_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def rpc_delay_for(kind):
    """The lookup answer delay (ms) the simulator applies while `kind` is measured."""
    return WORKER_VARIANTS.get(kind, {}).get("rpc_delay_ms", 0)
# Variables of the caller that must not reach a server (persistence, other coins, limits).
_DROP = ("DATABASE_URL", "POSTGRES_DB", "DB_", "WORKER_", "BITCART_", "ETH_", "LOG_LEVEL", "DAEMON_")


def clean_env(extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith(_DROP)}
    env.update(extra or {})
    return env


def _log_file(name):
    os.makedirs(LOGS, exist_ok=True)
    return open(os.path.join(LOGS, name + ".log"), "ab")


def wait_port(port, timeout=15.0, proc=None):
    """Waits until 127.0.0.1:port accepts a connection; False on timeout or if `proc` died."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


class Proc:
    """A pinned child process in its own process group."""

    def __init__(self, name, argv, core, env=None, stdin=None, stdout=None, cwd=None):
        self.name = name
        self.log = _log_file(name)
        self.log.write(f"\n=== {time.strftime('%H:%M:%S')} {' '.join(argv)}\n".encode())
        self.log.flush()
        self.popen = subprocess.Popen(
            ["taskset", "-c", str(core), *argv], env=env or clean_env(), stdin=stdin,
            stdout=stdout if stdout is not None else self.log, stderr=self.log, cwd=cwd,
            start_new_session=True)
        self.pid = self.popen.pid
        self.database = None

    def alive(self):
        return self.popen.poll() is None

    def stop(self, timeout=5.0):
        if self.alive():
            try:
                os.killpg(self.pid, signal.SIGTERM)
                self.popen.wait(timeout)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.popen.wait()
        self.log.close()
        if self.database is not None:
            self.database.drop()
            self.database = None


def server_argv(kind, port, daemon_port):
    daemon = f"ws://127.0.0.1:{daemon_port}/ws"
    if kind in WORKER_VARIANTS:
        return [WORKER, "run"]
    if kind == "tokio":
        return [TOKIO_RELAY, "--port", str(port), "--daemon", daemon]
    if kind == "node":
        return ["node", os.path.join(BENCH, "peers", "node", "relay.js"), "--port", str(port), "--daemon", daemon]
    if kind == "python":
        return [VENV_PY, os.path.join(BENCH, "peers", "python", "relay.py"), "--port", str(port), "--daemon", daemon]
    raise ValueError(f"unknown server {kind}")


def start_server(kind, port, daemon_port, core, worker_env=None):
    """Starts a server and waits for its port; raises RuntimeError if it does not come up."""
    env = clean_env()
    database = None
    if kind in WORKER_VARIANTS:
        c = BENCH_COIN
        env.update({"WORKER_COINS": c, f"{c}_HOST": "127.0.0.1", f"{c}_PORT": str(daemon_port),
                    "WORKER_HOST": "127.0.0.1", "WORKER_PORT": str(port), "WORKER_MAX_CLIENTS": "25000",
                    "WORKER_MAX_CONNECTIONS_PER_IP": "0", "LOG_LEVEL": "warn"})
        env.update(WORKER_VARIANTS[kind]["env"])
        if WORKER_VARIANTS[kind]["database"]:
            database = BenchDatabase()
            env.update(database.env())
        env.update(worker_env or {})
    p = Proc(f"server-{kind}", server_argv(kind, port, daemon_port), core, env=env)
    p.database = database
    if not wait_port(port, proc=p.popen):
        p.stop()
        raise RuntimeError(f"{kind} did not listen on {port} (see {p.log.name})")
    return p


class BenchDatabase:
    """A fresh PostgreSQL database and spool directory for one server run, dropped afterwards."""

    def __init__(self):
        import tempfile
        self.name = f"cwbench_{os.getpid()}_{int(time.time() * 1000)}"
        self.spool = tempfile.mkdtemp(prefix="cwbench-spool-")
        self._psql(f"CREATE DATABASE {self.name}")

    def _psql(self, sql):
        subprocess.run(["psql", PG_ADMIN, "-q", "-c", sql], check=True, capture_output=True, timeout=60)

    def env(self):
        base = PG_ADMIN.rsplit("/", 1)[0]
        return {"DATABASE_URL": f"{base}/{self.name}", "DB_SPOOL_DIR": self.spool}

    def drop(self):
        import shutil
        try:
            self._psql(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")
        except (subprocess.SubprocessError, OSError):
            pass
        shutil.rmtree(self.spool, ignore_errors=True)


class JsonProcs:
    """Processes that take line commands on stdin and answer JSON lines on stdout."""

    def __init__(self):
        self.procs = []

    def spawn(self, name, argv, core):
        p = Proc(name, argv, core, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        os.set_blocking(p.popen.stdout.fileno(), False)
        p.buf = b""
        self.procs.append(p)
        return p

    def send(self, line):
        for p in self.procs:
            p.popen.stdin.write((line + "\n").encode())
            p.popen.stdin.flush()

    def expect(self, kind, timeout):
        """The next line of type `kind` from every process (other lines are logged and skipped)."""
        deadline = time.time() + timeout
        got = {}
        sel = selectors.DefaultSelector()
        for i, p in enumerate(self.procs):
            sel.register(p.popen.stdout, selectors.EVENT_READ, i)
        try:
            while len(got) < len(self.procs):
                for i, p in enumerate(self.procs):
                    if i not in got and (line := _take_line(p, kind)) is not None:
                        got[i] = line
                if len(got) == len(self.procs):
                    break
                left = deadline - time.time()
                if left <= 0:
                    raise TimeoutError(f"{self.procs[0].name} gave no '{kind}' in {timeout:.0f} s")
                for key, _ in sel.select(min(left, 0.5)):
                    p = self.procs[key.data]
                    chunk = os.read(p.popen.stdout.fileno(), 1 << 20)
                    if not chunk:
                        raise RuntimeError(f"{p.name} exited (see {p.log.name})")
                    p.buf += chunk
        finally:
            sel.close()
        return [got[i] for i in range(len(self.procs))]

    def cpu_seconds(self):
        from .machine import cpu_seconds
        return sum(cpu_seconds(p.pid) for p in self.procs if p.alive())

    def stop(self):
        for p in self.procs:
            try:
                p.popen.stdin.write(b"exit\n")
                p.popen.stdin.flush()
            except (BrokenPipeError, ValueError, OSError):
                pass
        for p in self.procs:
            p.stop(timeout=10)


class Source(JsonProcs):
    """The event source: a silent simulator for everything the server asks (JSON-RPC, /spec, the
    /ws upgrade) behind `benchsrc`, which injects the open-loop bench pushes on command, so the
    server stays connected across steps (see bench/loadgen/src/bin/benchsrc.rs)."""

    def __init__(self, kind, core, rpc_delay_ms=0):
        super().__init__()
        self.kind = kind
        self.core = core
        self.rpc_delay_ms = rpc_delay_ms
        self.sim = None

    def sim_argv(self, port):
        if self.kind == "simulate":
            argv = [WORKER, "simulate", "--coin", BENCH_COIN, "--port", str(port), "--rate", "0",
                    "--block-interval", "0", "--wallets", "benchwallet", "--preload-wallets"]
            if self.rpc_delay_ms:
                argv += ["--fault", f"rpc_delay_ms={self.rpc_delay_ms}"]
            return argv
        return [VENV_PY, os.path.join(BENCH, "tools", "stand_in_source.py"), "--port", str(port),
                "--rate", "1", "--count", "0"]

    def start(self, port, sim_port):
        self.sim = Proc(f"source-{self.kind}", self.sim_argv(sim_port), self.core)
        if not wait_port(sim_port, timeout=10, proc=self.sim.popen):
            raise RuntimeError(f"simulator did not listen on {sim_port} (see {self.sim.log.name})")
        front = self.spawn("source-benchsrc", [BENCHSRC, "--listen", str(port), "--upstream", str(sim_port),
                                               "--coin", BENCH_COIN], self.core)
        if not wait_port(port, timeout=10, proc=front.popen):
            raise RuntimeError(f"benchsrc did not listen on {port} (see {front.log.name})")

    def wait_streams(self, want=1, timeout=30.0):
        """Waits until exactly `want` servers hold an open /ws stream."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            self.send("status")
            if self.expect("status", 5)[0]["streams"] == want:
                return
            time.sleep(0.1)
        raise RuntimeError(f"the server did not open its daemon stream in {timeout:.0f} s")

    def stream(self, rate, count):
        self.send(f"stream {rate:.9g} {count}")

    def stop(self):
        super().stop()
        self.procs = []
        if self.sim is not None:
            self.sim.stop()
            self.sim = None


class LoadGroup(JsonProcs):
    """N clients split over load processes of at most `per_proc` clients each."""

    def __init__(self, url, n, core, src_base, per_proc=9000, offset=0, tag="load"):
        super().__init__()
        count = max(1, -(-n // per_proc))
        for i in range(count):
            share = n // count + (1 if i < n % count else 0)
            argv = [LOADGEN, "--url", url, "--clients", str(share), "--offset", str(offset),
                    "--src-base", src_base, "--per-src", "4000", "--max-outstanding", "1000"]
            offset += share
            self.spawn(tag, argv, core)


def _take_line(p, kind):
    while b"\n" in p.buf:
        raw, p.buf = p.buf.split(b"\n", 1)
        try:
            msg = json.loads(raw)
        except ValueError:
            continue
        if msg.get("type") == kind:
            return msg
        if msg.get("type") == "error":
            p.log.write(raw + b"\n")
    return None


def merged_ready(lines):
    out = {"open": 0, "failed": 0, "connect_s": 0.0, "errors": {}, "close_codes": {}}
    for r in lines:
        out["open"] += r["open"]
        out["failed"] += r["failed"]
        out["connect_s"] = max(out["connect_s"], r.get("connect_s", 0.0))
        for key in ("errors", "close_codes"):
            for k, v in r.get(key, {}).items():
                out[key][k] = out[key].get(k, 0) + v
    return out
