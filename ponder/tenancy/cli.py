"""``ponder keys``: make API keys for the gateway (the config keeps only their sha256)."""

from __future__ import annotations

import re
import secrets

import click

from ponder.errors import ConfigError


@click.group("keys")
def keys_cmd() -> None:
    """Make and check API keys (``auth.keys`` in the config holds their sha256, never the secret)."""


@keys_cmd.command("new")
@click.argument("name")
@click.option("--limits", default=None, metavar="YAML",
              help='Limits for the config line, e.g. "{requests_per_minute: 60, max_thinking_tokens: 4096}".')
def new_cmd(name: str, limits: str | None) -> None:
    """Print a fresh secret for NAME and the config entry that admits it.

    The secret is shown once: give it to the client; put the entry under
    ``auth.keys`` in the config.
    """
    from ponder.tenancy import hash_secret

    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", name):
        raise ConfigError("NAME may hold letters, digits, '.', '_' and '-' (at most 64)", param="NAME")
    secret = "pk-" + secrets.token_urlsafe(32)
    entry = f"- name: {name}\n  key_sha256: {hash_secret(secret)}"
    if limits:
        import yaml

        try:
            parsed = yaml.safe_load(limits)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--limits is not YAML: {exc}", param="--limits") from None
        if not isinstance(parsed, dict):
            raise ConfigError("--limits must be a mapping", param="--limits")
        from ponder.config import KeyLimits

        try:
            KeyLimits.model_validate(parsed)
        except Exception as exc:
            raise ConfigError(f"--limits: {exc}".splitlines()[0], param="--limits") from None
        entry += "\n  limits: " + yaml.safe_dump(parsed, default_flow_style=True).strip()
    click.echo(f"secret (shown once; the client sends it as Authorization: Bearer ...):\n  {secret}\n")
    click.echo("config entry (under auth.keys):")
    click.echo("\n".join("  " + line for line in entry.splitlines()))


@keys_cmd.command("hash")
@click.argument("secret")
def hash_cmd(secret: str) -> None:
    """Print the sha256 of an existing secret (for the config)."""
    from ponder.tenancy import hash_secret

    click.echo(hash_secret(secret))
