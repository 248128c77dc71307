"""Health, models and metrics: the gateway's small endpoints."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from ponder import __version__
from ponder.errors import NotFound
from ponder.server.gateway import Gateway

_AUTO = {"id": "auto", "object": "model", "created": 0, "owned_by": "ponder", "ponder": {"routed": True}}


def register(app: FastAPI, gw: Gateway) -> None:
    config = gw.config

    @app.get("/health")
    async def health():
        return {"status": "draining" if gw.draining else "ok", "version": __version__,
                "lanes": [lane.name for lane in config.lanes], "in_flight": len(gw.runs)}

    @app.get("/ready", responses={503: {"description": "not ready: the failing checks are named"}})
    async def ready():
        """Readiness (distinct from liveness): take traffic only when every check passes."""
        checks = await readiness(gw)
        ok = all(c["ok"] for c in checks.values()) and not gw.draining
        body = {"ready": ok, "draining": gw.draining, "checks": checks}
        return body if ok else JSONResponse(body, status_code=503)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [model_card(lane, gw) for lane in config.lanes] + [dict(_AUTO)]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str):
        for lane in config.lanes:
            if lane.name == model_id:
                return model_card(lane, gw)
        if model_id == "auto":
            return dict(_AUTO)
        raise NotFound(f"the model {model_id!r} does not exist", param="model", code="model_not_found")

    @app.get("/metrics")
    async def prometheus():
        return Response(render_metrics(gw), media_type=CONTENT_TYPE_LATEST)


async def readiness(gw: Gateway) -> dict:
    """Local models loaded, upstream lanes probed, the quota store reachable."""
    from ponder.backends.registry import lane_has, unprobed

    checks: dict = {}
    for lane in gw.config.lanes:
        if lane_has(lane, "local_model"):
            loaded = gw.service.cached_backend(lane) is not None
            task = gw.loading.get(lane.name)
            what = "model loaded" if loaded else "loading the model"
            if not loaded and task is not None and task.done() and task.exception() is not None:
                what = f"model failed to load: {task.exception()}"
                gw.loading.pop(lane.name)  # the next probe tries again
            elif not loaded and task is None:  # load it now: readiness must converge on its own
                gw.loading[lane.name] = asyncio.ensure_future(gw.service.backend_async(lane))
            checks[f"lane:{lane.name}"] = {"ok": loaded, "what": what}
        else:
            probed = not unprobed([lane])
            checks[f"lane:{lane.name}"] = {"ok": probed, "what": "upstream probed" if probed else
                                           "upstream not probed yet (unreachable?)"}
    if gw.tenancy is not None:
        from ponder.tenancy.store import StoreUnavailable

        try:
            await asyncio.wait_for(gw.tenancy.store.ping(), 3.0)
            checks["quota_store"] = {"ok": True, "what": "reachable"}
        except (StoreUnavailable, asyncio.TimeoutError) as exc:
            checks["quota_store"] = {"ok": False, "what": f"unreachable: {exc}"}
    return checks


def model_card(lane, gw: Gateway) -> dict:
    """A lane as a model: its backend, what its engine can do, and (a fleet) its replicas' state."""
    from ponder.backends.registry import capabilities

    card = {"backend": lane.backend, "model": lane.model or lane.upstream_model, "effort": lane.effort,
            "strategy": lane.strategy, "capabilities": sorted(capabilities(lane))}
    backend = gw.service.cached_backend(lane)
    dialect = getattr(getattr(backend, "dialect", None), "name", None)
    if dialect is not None:
        card["engine"] = dialect  # the engine family whose raw completions ponder drives
    replicas = getattr(backend, "replicas", None)
    if replicas is not None:
        card["replicas"] = replicas.state()
    return {"id": lane.name, "object": "model", "created": 0, "owned_by": "ponder", "ponder": card}


def render_metrics(gw: Gateway) -> bytes:
    """The Prometheus text, with the gauges that are read at scrape time brought up to date first."""
    metrics = gw.metrics
    for b in gw.service.backends():
        load = b.load()
        if load:
            metrics.queue_depth.labels(b.info.name).set(load.get("waiting", 0))
            metrics.engine_active.labels(b.info.name).set(load.get("active", 0))
            if "threads" in load:
                metrics.engine_threads.labels(b.info.name).set(load["threads"])
                metrics.decode_rate.labels(b.info.name).set(load["decode_tokens_per_second"])
                metrics.preemptions.labels(b.info.name).set(load.get("preemptions", 0))
                metrics.resumed.labels(b.info.name).set(load.get("resumed", 0))
                metrics.kv_saved.labels(b.info.name).set(load.get("kv_saved", 0))
                metrics.kv_restored.labels(b.info.name).set(load.get("kv_restored", 0))
    in_flight: dict[str, int] = {}
    for run, _ in gw.runs.values():
        in_flight[run.plan.lane.name] = in_flight.get(run.plan.lane.name, 0) + 1
    for lane in gw.config.lanes:
        metrics.in_flight.labels(lane.name).set(in_flight.get(lane.name, 0))
        replicas = getattr(gw.service.cached_backend(lane), "replicas", None)
        for r in replicas.state() if replicas is not None else ():
            for gauge, value in ((metrics.replica_in_flight, r["in_flight"]), (metrics.replica_calls, r["calls"]),
                                 (metrics.replica_errors, r["errors"]), (metrics.replica_ejections, r["ejections"]),
                                 (metrics.replica_ejected, int(r["ejected"]))):
                gauge.labels(lane.name, r["url"]).set(value)
    metrics.thinking_in_flight.set(gw.shedder.thinking_in_flight)
    return metrics.render()
