"""What every sink is: something that takes queued deliveries and says how it went.

The dispatcher (``feedwatch.deliver``) owns retries, backoff and the outbox;
a sink only sends and classifies the outcome. A sink never raises for a
failed send: it returns a ``SendResult`` saying whether the failure is
transient (retry later) or permanent (dead at once), per SPEC section 6.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from feedwatch.store.base import Delivery


@dataclass(frozen=True)
class SendResult:
    ok: bool
    permanent: bool = False  # True: mark dead now; False: retry on the backoff schedule
    error: str | None = None  # a sentence for logs and `status`; never holds a secret
    retry_after: float | None = None  # seconds the receiver asked us to wait
    # the receiver refused the message for its size (SMTP 552, HTTP 413): the dispatcher
    # sends a digest of several alerts so refused again as two halves
    too_big: bool = False
    # Some recipients took the message, and the failure is the others' (an email
    # server deferring or refusing some at RCPT): the recipients still owed it, stored
    # with the delivery (``Delivery.recipients_left``) so that its retry (transient) or
    # redelivery (permanent) goes to these alone. None: the outcome is every recipient's.
    recipients_left: tuple[str, ...] | None = None

    @classmethod
    def success(cls) -> SendResult:
        return cls(ok=True)

    @classmethod
    def transient(
        cls,
        error: str,
        retry_after: float | None = None,
        *,
        recipients_left: Sequence[str] | None = None,
    ) -> SendResult:
        left = None if recipients_left is None else tuple(recipients_left)
        return cls(
            ok=False, permanent=False, error=error, retry_after=retry_after, recipients_left=left
        )

    @classmethod
    def dead(
        cls, error: str, *, too_big: bool = False, recipients_left: Sequence[str] | None = None
    ) -> SendResult:
        left = None if recipients_left is None else tuple(recipients_left)
        return cls(ok=False, permanent=True, error=error, too_big=too_big, recipients_left=left)


class LearntSize:
    """What a receiver's refusals for size (``SendResult.too_big``) taught of a limit it
    enforces but did not announce: the smallest message (bytes as sent) it refused, and
    the largest it took below that. A sink keeps one for its life (the process, or until
    a reload changes the sink), so that its next messages are cut to what the receiver
    took before they are sent, not refused first and then halved."""

    def __init__(self) -> None:
        self.refused: int | None = None
        self.accepted: int | None = None

    def learn(self, size: int, result: SendResult) -> None:
        """What a send of ``size`` bytes tells of the receiver's unannounced limit."""
        if result.too_big:
            if self.refused is None or size < self.refused:
                self.refused = size
            if self.accepted is not None and self.accepted >= self.refused:
                self.accepted = None  # taken before the limit came down
        elif result.ok or result.recipients_left is not None:  # (some recipients took it)
            if self.refused is not None and size >= self.refused:
                self.refused = None  # the limit went up
            if self.accepted is None or size > self.accepted:
                self.accepted = size

    def limit(self) -> int | None:
        """The most a message may take as the refusals taught: the largest message taken
        below the smallest refused, or half that refused size if more (a lone small alert
        taken says little of the limit: cut to it, every later digest would go an alert a
        message, for good); None, none refused. A half refused again is halved as any
        refused message is, and teaches a smaller refused size."""
        if self.refused is None:
            return None
        return max(self.accepted or 0, self.refused // 2)


class Sink(Protocol):
    name: str
    type: str
    supports_digest: bool
    # Optional: ``max_batch`` (int, default 1) -- how many non-digest alerts the
    # dispatcher may hand over in one ``send``; they succeed or fail together.
    # Optional: ``async digest_parts(deliveries) -> list[list[Delivery]]`` -- a held
    # batch cut, in order, into digests that each fit what the receiver takes; the
    # dispatcher sends (and marks) them one by one. Without it a digest is one send.

    async def send(self, deliveries: Sequence[Delivery]) -> SendResult:
        """Send one alert (one delivery) or, for a digest, several as one message.

        The deliveries' payloads are the SPEC section 5 objects. All of them
        succeed or fail together; a message refused for its size says so
        (``too_big``), and the dispatcher then sends several as two halves.
        A sink with several recipients sends to the deliveries' ``recipients_left``
        alone when they have some (the dispatcher hands over together only
        deliveries owed to the same ones), and says who is still owed the message
        when some took it (``SendResult.recipients_left``).
        """
        ...

    async def aclose(self) -> None: ...


T = TypeVar("T")


def fit_parts(
    items: Sequence[T], size: Callable[[Sequence[T]], int], limit: int, guess: Sequence[int]
) -> list[list[T]]:
    """``items`` cut, in order, into runs whose rendering takes at most ``limit`` bytes.

    ``size(run)`` is what the run takes as sent; ``guess[i]`` a rough cost of item i,
    which picks how many to try (scaled by what the last rendering measured), so that
    a run is usually measured once or twice. Each run is as long as fits; an item too
    big alone is a run alone (the receiver decides on it, as on any one alert).
    """
    parts: list[list[T]] = []
    start = 0
    scale = 1.0
    while start < len(items):
        rest = items[start:]
        cum = [0]
        for g in guess[start:]:
            cum.append(cum[-1] + max(1, g))
        fits, too_big = 0, len(rest) + 1  # the longest run known to fit, the shortest not
        tries = 0
        while too_big - fits > 1:
            # the longest run the scaled guesses allow, within what is known; after a few
            # tries, halve the interval
            n = max(k for k in range(len(cum)) if k <= 1 or cum[k] * scale <= limit)
            if tries >= 3:
                n = (fits + too_big) // 2
            n = min(max(n, fits + 1), too_big - 1)
            taken = size(rest[:n])
            tries += 1
            scale = max(taken / cum[n], 1e-3)
            if taken <= limit or n == 1:
                fits = n
            else:
                too_big = n
        parts.append(list(rest[:fits]))
        start += fits
    return parts


# How many times one alert refused for its size (SMTP 552, HTTP 413) goes again, cut
# smaller, in one send (each try is at most half the smallest message refused, or the
# largest taken below it: ``LearntSize``, ``cut_to_fit``)
MAX_CUTS = 24


def cut_to_fit(
    build: Callable[[int], T], size: Callable[[T], int], low: int, most: int, limit: int
) -> T | None:
    """One alert's message made to fit a receiver that refused it for its size:
    ``build(cap)`` renders it with its texts cut to ``cap`` characters (and its lists to
    ``cap`` items); the message of the largest cap in [``low``, ``most``) whose ``size``
    is at most ``limit``, or of ``low`` (cut as far as it goes) when even that is bigger.
    None: nothing in it is longer than ``low``, nothing to cut."""
    if most <= low:
        return None
    best = build(low)
    if size(best) > limit:
        return best
    high = most - 1  # the largest cap that fits, in [low, high]
    while low < high:
        cap = (low + high + 1) // 2
        message = build(cap)
        if size(message) <= limit:
            low, best = cap, message
        else:
            high = cap - 1
    return best
