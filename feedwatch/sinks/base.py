"""What every sink is: something that takes queued deliveries and says how it went.

The dispatcher (``feedwatch.deliver``) owns retries, backoff and the outbox;
a sink only sends and classifies the outcome. A sink never raises for a
failed send: it returns a ``SendResult`` saying whether the failure is
transient (retry later) or permanent (dead at once), per SPEC section 6.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from feedwatch.store.base import Delivery


@dataclass(frozen=True)
class SendResult:
    ok: bool
    permanent: bool = False  # True: mark dead now; False: retry on the backoff schedule
    error: str | None = None  # a sentence for logs and `status`; never holds a secret
    retry_after: float | None = None  # seconds the receiver asked us to wait

    @classmethod
    def success(cls) -> SendResult:
        return cls(ok=True)

    @classmethod
    def transient(cls, error: str, retry_after: float | None = None) -> SendResult:
        return cls(ok=False, permanent=False, error=error, retry_after=retry_after)

    @classmethod
    def dead(cls, error: str) -> SendResult:
        return cls(ok=False, permanent=True, error=error)


class Sink(Protocol):
    name: str
    type: str
    supports_digest: bool
    # Optional: ``max_batch`` (int, default 1) -- how many non-digest alerts the
    # dispatcher may hand over in one ``send``; they succeed or fail together.

    async def send(self, deliveries: Sequence[Delivery]) -> SendResult:
        """Send one alert (one delivery) or, for a digest, several as one message.

        The deliveries' payloads are the SPEC section 5 objects. All of them
        succeed or fail together.
        """
        ...

    async def aclose(self) -> None: ...
