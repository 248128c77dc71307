"""Health, models and metrics: the gateway's small endpoints."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import Response
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


def model_card(lane, gw: Gateway) -> dict:
    """A lane as a model: its backend, what its engine can do, and (a fleet) its replicas' state."""
    from ponder.backends.registry import capabilities

    card = {"backend": lane.backend, "model": lane.model or lane.upstream_model, "effort": lane.effort,
            "strategy": lane.strategy, "capabilities": sorted(capabilities(lane))}
    replicas = getattr(gw.service.cached_backend(lane), "replicas", None)
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
