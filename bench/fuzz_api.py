"""Schemathesis against ponder's own /openapi.json: generated requests must never get a 5xx.

Installs schemathesis into its own environment (``.venv-fuzz``, kept out of
ponder's), starts ``ponder serve`` on 127.0.0.1 with the embedded tiny model
and small limits (so valid generated requests are cheap), and runs
schemathesis for a bounded time with the ``not_a_server_error`` check.  The
gateway's own metrics are read afterwards: the run passes when no request
was answered with a 5xx.

    .venv/bin/python bench/fuzz_api.py [--max-time 120]
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
FUZZ_VENV = ROOT / ".venv-fuzz"
CONFIG = {
    "policy": "off",
    "ledger": {"url": "off"},
    "server": {"max_samples": 2, "max_answer_tokens": 16, "deadline_s": 20, "access_log": False,
               "max_request_tokens": 4096},
    "thinking": {"max_budget": 64, "efforts": {"none": 0, "minimal": 8, "low": 16, "medium": 32, "high": 48,
                                               "xhigh": 56, "max": 64}},
    "lanes": [{"name": "default", "n_ctx": 512, "answer_tokens": 16}],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_schemathesis() -> Path:
    st = FUZZ_VENV / "bin" / "st"
    if not st.exists():
        subprocess.run([sys.executable, "-m", "venv", str(FUZZ_VENV)], check=True)
        subprocess.run([str(FUZZ_VENV / "bin" / "pip"), "install", "--quiet", "schemathesis==4.32.5"], check=True)
    return st


def five_xx(url: str) -> int:
    total = 0
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        m = re.match(r'ponder_requests_total\{lane="[^"]*",status="(\d+)"\} (\S+)', line)
        if m and m.group(1).startswith("5"):
            total += int(float(m.group(2)))
    return total


def requests_seen(url: str) -> int:
    total = 0
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        m = re.match(r'ponder_requests_total\{lane="[^"]*",status="(\d+)"\} (\S+)', line)
        if m:
            total += int(float(m.group(2)))
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-time", type=int, default=120, help="seconds schemathesis may run")
    args = ap.parse_args()
    st = ensure_schemathesis()
    tmp = tempfile.mkdtemp(prefix="ponder-fuzz-")
    cfg_path = os.path.join(tmp, "ponder.yaml")
    Path(cfg_path).write_text(yaml.safe_dump(CONFIG))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(os.path.join(tmp, "gateway.log"), "w")
    gw = subprocess.Popen([sys.executable, "-m", "ponder.cli", "serve", "--port", str(port), "--config", cfg_path,
                           "--log-level", "warning"], stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(300):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        t0 = time.perf_counter()
        run = subprocess.run([str(st), "run", f"{url}/openapi.json", "--checks", "not_a_server_error",
                              "--max-time", str(args.max_time), "--workers", "1",
                              "--suppress-health-check", "all", "--request-timeout", "60"],
                             capture_output=True, text=True, timeout=args.max_time + 300)
        wall = time.perf_counter() - t0
        tail = "\n".join(run.stdout.strip().splitlines()[-15:])
        print(tail)
        seen, errors = requests_seen(url), five_xx(url)
        print(f"\nschemathesis ran {wall:.0f} s; the gateway answered {seen} chat requests, {errors} of them 5xx "
              f"(target 0); schemathesis exit code {run.returncode}")
        return 0 if errors == 0 and run.returncode == 0 else 1
    finally:
        gw.terminate()
        gw.wait(30)


if __name__ == "__main__":
    sys.exit(main())
