"""Tenancy: API keys, quotas and spend caps (filled in by the tenancy work)."""

from __future__ import annotations


def build_tenancy(config):
    """The gateway's key and quota keeper; None when no key is configured and nothing is limited."""
    return None
