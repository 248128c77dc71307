"""Learning what an upstream engine offers, once, when its lane's engine is built.

``llama-server`` answers ``GET /props`` with its chat template and context
size: such a lane becomes a :class:`~ponder.backends.text_engine.TextEngineBackend`
(raw completions: exact thinking control, every strategy, tools inside the
thinking).  Anything else — a hosted API, an engine without raw completions,
an upstream that is down at start-up — stays a chat lane; the reason is logged.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import httpx

from ponder.thinking import prompts

log = logging.getLogger("ponder.upstream")

#: how long a probe may take (start-up waits for it)
PROBE_TIMEOUT_S = 3.0


def text_engine_or_none(lane: Any) -> Any:
    for url in lane.base_urls or [lane.base_url]:
        engine = _probe(lane, url)
        if engine is not None:
            return engine
    return None


def _probe(lane: Any, url: str) -> Any:
    root = (url or "").rstrip("/").removesuffix("/v1")
    key = os.environ.get(lane.api_key_env) if lane.api_key_env else None
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        with httpx.Client(base_url=root, headers=headers, timeout=PROBE_TIMEOUT_S) as c:
            r = c.get("/props")
            props = r.json() if r.status_code == 200 else None
            if not isinstance(props, dict) or "chat_template" not in props:
                log.info("lane %s: no raw-completion engine found at %s (a chat lane)", lane.name, root)
                return None
            counts = {}
            for text in (prompts.CONTINUE_CUE, prompts.CLOSE_THINKING, prompts.ANSWER_CUE):
                t = c.post("/tokenize", json={"content": text, "add_special": False})
                if t.status_code == 200:
                    counts[text] = len(t.json().get("tokens") or ()) or 1
    except (httpx.HTTPError, ValueError) as exc:
        log.warning("lane %s: probing %s failed (%s): a chat lane", lane.name, root, type(exc).__name__)
        return None
    from ponder.backends.text_engine import TextEngineBackend

    log.info("lane %s: llama-server at %s: raw completions, exact thinking control, every strategy", lane.name, root)
    b = TextEngineBackend(lane.base_urls or [lane.base_url], lane.upstream_model or lane.model or "default",
                          props={**props, "_counts": counts}, name=lane.name, timeout_s=lane.timeout_s,
                          max_connections=lane.max_connections, api_key=key,
                          reasoning_format=lane.reasoning_format, eject_s=lane.eject_s)
    b.priority_mode = lane.engine_priority
    return b
