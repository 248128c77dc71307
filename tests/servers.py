"""Start real ponder gateways on 127.0.0.1 for tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from conftest import free_port


class Gateway:
    def __init__(self, config: dict, tmp: Path) -> None:
        self.port = free_port()
        tmp.mkdir(parents=True, exist_ok=True)
        self.config_path = tmp / f"ponder-{self.port}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log = tmp / f"ponder-{self.port}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ponder.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port),
             "--config", str(self.config_path), "--log-level", "warning"],
            stdout=self.log.open("w"), stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        deadline = time.time() + 90
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url("/health"), timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("gateway did not start")

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def base_url(self) -> str:
        return self.url("/v1")

    def metric(self, name: str, **labels) -> float:
        text = httpx.get(self.url("/metrics"), timeout=5).text
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
