"""Spike detection, burn rate and readiness."""

from __future__ import annotations

import httpx
import pytest

from ponder.config_ops import AnomalyConfig
from ponder.server.metrics import Metrics
from ponder.server.watch import Watch


def watch(**kw) -> tuple[Watch, Metrics]:
    m = Metrics(["team-a"])
    return Watch(AnomalyConfig(**{"min_requests": 5, "factor": 4, "min_excess_tokens": 100, **kw}), m), m


def count(m: Metrics, scope: str, subject: str) -> float:
    return m.registry.get_sample_value("ponder_thinking_anomaly_total", {"scope": scope, "subject": subject}) or 0.0


def test_a_request_far_above_its_baseline_is_a_spike_once_the_baseline_holds_enough():
    w, m = watch()
    assert w.observe("lane-a", "team-a", 2000, 0.0, now=0) == []  # no baseline yet: nothing to compare
    w2, m2 = watch()
    for i in range(5):
        assert w2.observe("lane-a", "team-a", 100, 0.0, now=i) == []
    spikes = w2.observe("lane-a", "team-a", 1000, 0.0, now=10)
    assert {(s["scope"], s["name"]) for s in spikes} == {("lane", "lane-a"), ("key", "team-a")}
    assert spikes[0]["baseline"] == pytest.approx(100)
    assert count(m2, "lane", "lane-a") == 1 and count(m2, "key", "team-a") == 1
    # 4x but fewer than min_excess_tokens more: ordinary variation of a small baseline
    w3, _ = watch()
    for i in range(5):
        w3.observe("lane-a", None, 10, 0.0, now=i)
    assert w3.observe("lane-a", None, 60, 0.0, now=9) == []


def test_a_keys_minute_of_spend_far_above_its_average_minute_is_a_spike():
    w, m = watch()
    for minute in range(6):
        w.observe("lane-a", "team-a", 10, 0.01, now=minute * 60 + 1)
    spikes = []
    for i in range(10):  # ten requests in minute 6: 0.10 against an average minute of 0.01
        spikes += w.observe("lane-a", "team-a", 10, 0.01, now=6 * 60 + 2 + i)
    assert [s["scope"] for s in spikes] == ["key_cost"]  # once per minute, not once per request
    assert count(m, "key_cost", "team-a") == 1


def test_burn_rate_projects_when_a_key_reaches_its_caps():
    w, m = watch(window_s=600)
    for i in range(10):  # $0.5 a minute for ten minutes
        w.observe("lane-a", "team-a", 1000, 0.5, remaining={"spend": 30.0, "thinking": 60_000}, now=i * 60)
    eta = m.registry.get_sample_value("ponder_key_cap_eta_seconds", {"key": "team-a", "cap": "spend_usd_per_month"})
    # $5 over the 540 s the window has seen: $30 left lasts 30 / (5 / 540) s
    assert eta == pytest.approx(30 / (5 / 540))
    think = m.registry.get_sample_value("ponder_key_cap_eta_seconds", {"key": "team-a", "cap": "thinking_tokens_per_day"})
    assert think == pytest.approx(60_000 / (10_000 / 540))


def test_ready_is_503_naming_the_check_while_the_quota_store_is_unreachable(tmp_path):
    from conftest import free_port
    from ponder.tenancy.tenancy import hash_secret
    from servers import Gateway

    cfg = {"ledger": {"url": "off"}, "server": {"access_log": False},
           "state": {"url": f"redis://127.0.0.1:{free_port()}/0"},
           "auth": {"keys": [{"name": "a", "key_sha256": hash_secret("pk-a")}]},
           "lanes": [{"name": "default", "max_sequences": 1, "n_ctx": 512}]}
    g = Gateway(cfg, tmp_path)
    try:
        assert httpx.get(g.url("/health"), timeout=5).status_code == 200  # alive
        r = httpx.get(g.url("/ready"), timeout=10)
        assert r.status_code == 503
        checks = r.json()["checks"]
        assert checks["quota_store"]["ok"] is False and checks["lane:default"]["ok"] is True
    finally:
        g.stop()
