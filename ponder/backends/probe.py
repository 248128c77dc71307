"""Learning what an upstream engine offers, once, when its lane's engine is built.

* ``llama-server`` answers ``GET /props`` with its chat template and context
  size;
* SGLang answers ``GET /get_model_info``, vLLM ``GET /version``; neither
  publishes its chat template, so the lane names the model's own
  (``chat_template``: a Jinja file, the model's ``tokenizer_config.json``, or
  the template text), and the context length comes from ``GET /v1/models``
  (``max_model_len``).

Such a lane becomes a :class:`~ponder.backends.text_engine.TextEngineBackend`
(raw completions: exact thinking control, every strategy, tools inside the
thinking) speaking the engine's dialect.  Anything else — a hosted API, an
engine without raw completions, vLLM or SGLang without a template, an
upstream that is down at start-up — stays a chat lane; the reason is logged.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import httpx

from ponder.backends.dialects import DIALECTS
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
            found = _identify(lane, c, root)
            if found is None:
                return None
            dialect, props = found
            model = lane.upstream_model or lane.model or props.get("_model") or "default"
            counts, speaks = {}, DIALECTS[dialect](model)
            for text in (prompts.CONTINUE_CUE, prompts.CLOSE_THINKING, prompts.ANSWER_CUE):
                t = c.post("/tokenize", json=speaks.tokenize_body(text))
                if t.status_code == 200:
                    counts[text] = len(t.json().get("tokens") or ()) or 1
    except (httpx.HTTPError, ValueError) as exc:
        log.warning("lane %s: probing %s failed (%s): a chat lane", lane.name, root, type(exc).__name__)
        return None
    from ponder.backends.text_engine import TextEngineBackend

    log.info("lane %s: %s at %s: raw completions, exact thinking control, every strategy", lane.name, dialect, root)
    b = TextEngineBackend(lane.base_urls or [lane.base_url], model,
                          props={**props, "_counts": counts}, name=lane.name, timeout_s=lane.timeout_s,
                          max_connections=lane.max_connections, api_key=key,
                          reasoning_format=lane.reasoning_format, eject_s=lane.eject_s, dialect=dialect,
                          health_interval_s=lane.health_interval_s)
    b.priority_mode = lane.engine_priority
    return b


def _identify(lane: Any, c: httpx.Client, root: str) -> tuple[str, dict] | None:
    """(dialect, props) of the engine at ``root``, or None (logged) when it is not one ponder can drive."""
    r = c.get("/props")
    props = r.json() if r.status_code == 200 else None
    if isinstance(props, dict) and "chat_template" in props:
        return "llama-server", props
    dialect = None
    if c.get("/get_model_info").status_code == 200:
        dialect = "sglang"
    else:
        v = c.get("/version")
        if v.status_code == 200 and isinstance(v.json(), dict) and "version" in v.json():
            dialect = "vllm"
    if dialect is None:
        log.info("lane %s: no raw-completion engine found at %s (a chat lane)", lane.name, root)
        return None
    template = load_template(lane.chat_template) if lane.chat_template else None
    if template is None:
        log.warning("lane %s: %s at %s publishes no chat template; set the lane's chat_template (the model's "
                    "tokenizer_config.json or a Jinja file) for raw completions: a chat lane", lane.name, dialect, root)
        return None
    models = c.get("/v1/models")
    data = (models.json().get("data") or [{}]) if models.status_code == 200 else [{}]
    return dialect, {**template, "n_ctx": int(data[0].get("max_model_len") or 0), "_model": data[0].get("id")}


def load_template(spec: str) -> dict:
    """``{"chat_template", "bos_token", "eos_token"}`` from a tokenizer_config.json, a Jinja file, or the text."""
    path = Path(os.path.expanduser(spec))
    if "{%" not in spec and path.is_file():
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            cfg = json.loads(text)

            def tok(v: Any) -> str:
                return (v.get("content") if isinstance(v, dict) else v) or ""

            return {"chat_template": cfg.get("chat_template") or "", "bos_token": tok(cfg.get("bos_token")),
                    "eos_token": tok(cfg.get("eos_token"))}
        return {"chat_template": text, "bos_token": "", "eos_token": ""}
    return {"chat_template": spec, "bos_token": "", "eos_token": ""}
