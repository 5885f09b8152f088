"""Building every benchmark part once (release) and recording the versions in use.

Bench crates build into bench/target (their own workspaces); the worker builds in the main
crate's own target dir. The Python venv and node_modules live inside bench/ (gitignored) and are
only created when missing, so a rerun does not touch the network.
"""

import json
import os
import re
import subprocess
import sys

from . import procs

BENCH = procs.BENCH


def _run(argv, cwd, env=None, log=print):
    log(f"  $ {' '.join(argv)}  (in {os.path.relpath(cwd, procs.ROOT) or '.'})")
    subprocess.run(argv, cwd=cwd, env=env, check=True)


def build_all(servers, log=print):
    env = dict(os.environ, CARGO_TARGET_DIR=os.path.join(BENCH, "target"))
    _run(["cargo", "build", "--release", "--quiet"], os.path.join(BENCH, "loadgen"), env, log)
    if "tokio" in servers:
        _run(["cargo", "build", "--release", "--quiet"], os.path.join(BENCH, "peers", "tokio"), env, log)
    _run(["cargo", "build", "--release", "--quiet", "--bin", "cryptoworker"], procs.ROOT, None, log)
    if "python" in servers or not os.path.exists(procs.VENV_PY):
        if not os.path.exists(procs.VENV_PY):
            _run([sys.executable, "-m", "venv", os.path.join(BENCH, ".venv")], BENCH, None, log)
        # A satisfied pinned requirement is checked locally, without the network.
        req = os.path.join(BENCH, "peers", "python", "requirements.txt")
        _run([procs.VENV_PY, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", req],
             BENCH, None, log)
    if "node" in servers and not os.path.exists(os.path.join(BENCH, "peers", "node", "node_modules", "ws")):
        _run(["npm", "ci", "--no-audit", "--no-fund"], os.path.join(BENCH, "peers", "node"), None, log)


def missing_parts(servers):
    """What `--no-build` would need but is not there (a fresh clone has none of it)."""
    need = [procs.LOADGEN, procs.BENCHSRC, procs.WORKER]
    if "tokio" in servers:
        need.append(procs.TOKIO_RELAY)
    if "python" in servers:
        need.append(procs.VENV_PY)
    if "node" in servers:
        need.append(os.path.join(BENCH, "peers", "node", "node_modules", "ws"))
    return [p for p in need if not os.path.exists(p)]


def source_kind(requested, log=print):
    """`simulate` when the worker binary offers `simulate --bench`, else the stand-in."""
    if requested != "auto":
        return requested
    try:
        out = subprocess.run([procs.WORKER, "simulate", "--help"], capture_output=True, text=True, timeout=10)
        if "--bench" in out.stdout + out.stderr:
            return "simulate"
    except (OSError, subprocess.TimeoutExpired):
        pass
    log("  `cryptoworker simulate --bench` is not available: using bench/tools/stand_in_source.py")
    return "stand-in"


def _out(argv, cwd=None):
    try:
        return subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=20).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def _lock_versions(path, names):
    try:
        text = open(path).read()
    except OSError:
        return {}
    found = {}
    for m in re.finditer(r'name = "([^"]+)"\nversion = "([^"]+)"', text):
        if m.group(1) in names:
            found[m.group(1)] = m.group(2)
    return found


def versions():
    v = {"cryptoworker": _out(["git", "describe", "--always", "--dirty"], procs.ROOT),
         "rustc": _out(["rustc", "--version"]).replace("rustc ", ""),
         "python": _out([procs.VENV_PY, "--version"]).replace("Python ", ""),
         "websockets": _out([procs.VENV_PY, "-c", "import websockets; print(websockets.__version__)"]),
         "node": _out(["node", "--version"])}
    try:
        with open(os.path.join(BENCH, "peers", "node", "node_modules", "ws", "package.json")) as f:
            v["ws"] = json.load(f)["version"]
    except (OSError, ValueError, KeyError):
        v["ws"] = "?"
    for name, ver in _lock_versions(os.path.join(BENCH, "peers", "tokio", "Cargo.lock"),
                                    {"tokio", "tokio-tungstenite"}).items():
        v[name] = ver
    for name, ver in _lock_versions(os.path.join(procs.ROOT, "Cargo.lock"), {"mio", "tungstenite"}).items():
        v[f"{name} (worker)"] = ver
    return v
