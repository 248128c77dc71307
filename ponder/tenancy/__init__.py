"""Tenancy: who may think how much — API keys, per-request limits, quotas that never overshoot.

* **Keys.** ``Authorization: Bearer <secret>`` or ``x-api-key``; the config
  keeps only each secret's sha256 (``ponder keys new NAME`` makes one).
  Missing or wrong: 401 (``invalid_api_key``).  Without ``auth.required``,
  requests with no key run under the ``anonymous`` limits (a wrong key is
  still a 401).
* **Per-request limits** (lanes, effort, thinking cap, samples): a request
  beyond its key's limits gets 403 naming the limit, or — with ``clamp:
  true`` — is clamped, and ``ponder.clamped`` says what changed.
* **Quotas** (requests and tokens per minute, thinking tokens per day,
  dollars per month, concurrency): the request's worst case is reserved
  atomically against all of them at admission and settled to its real
  usage when it ends (:mod:`ponder.tenancy.store`); a refusal is 429 naming
  the limit, with Retry-After and OpenAI's ``x-ratelimit-*`` headers.
* **A settle the store refuses is kept, not dropped.**  When the quota store
  is unreachable as a request ends, its settle waits in this replica and the
  heartbeat retries it every second until the store is back (settles are
  idempotent, so a retry never counts twice).  Dropping it would lose the
  usage and, worse, leave the reservation held: the heartbeat renews every
  lease this replica owns, so the slot would never come back.
"""

from ponder.tenancy.store import Ask, QuotaStore, StoreUnavailable, open_store
from ponder.tenancy.tenancy import Principal, Reservation, StateUnavailable, Tenancy, build_tenancy, hash_secret

__all__ = ["Ask", "Principal", "QuotaStore", "Reservation", "StateUnavailable", "StoreUnavailable", "Tenancy",
           "build_tenancy", "hash_secret", "open_store"]
