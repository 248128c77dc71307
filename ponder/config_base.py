"""What every config section shares: strict, frozen models, and YAML's booleans read back as words."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _word(v: Any) -> Any:
    """YAML 1.1 turns off/on/no/yes into booleans: give the word back."""
    if v is True:
        return "on"
    if v is False:
        return "off"
    return v
