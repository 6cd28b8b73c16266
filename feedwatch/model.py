"""Plain values passed between the pure core and the shell.

Everything here is a frozen dataclass: the core (identity, diff, match, alert)
only ever takes these in and hands these back, so it can be tested with values
and never touches a socket, a file or the clock.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

# --------------------------------------------------------------------------
# Config (built and validated by feedwatch.config)
# --------------------------------------------------------------------------

IdPolicy = Literal["auto", "guid", "link", "content"]
UpdatesMode = Literal["any", "content", "timestamp"]
DuplicatesMode = Literal["alert", "skip"]
FirstPoll = Literal["baseline", "alert"]
ChangeKind = Literal["new", "updated"]
# An entry's (title, summary, content) as earlier releases read them (feedwatch.text's
# ``html_readings``): [0] as fingerprint v6 read them where it read otherwise than now
# (in a field without a tag of its own, what decoding made read as markup however it
# looked: "the &lt;dialog&gt; element" as "the element"; ruby's readings read into the
# words they annotate, "北きた朝ちょう鮮せん"), else as v5 (in a field of markup of
# its own, "Vec&lt;u8&gt;" reduced as a tag, to "Vec"; a footnote marker joined to the
# word before it, "Dnipro1"; a MathML annotation read), [1] as v4 (also the text after an
# element named like svg-icon or title-bar, and after a head, an xml or an svg left
# open, lost), [2] as the releases before v4 (the text after a self-closed svg, xml or
# head lost too), [3] as the first releases of v1 (before parse version 3: the text
# after an element that decoding made and left open lost too, "a &lt;script&gt; tag")
_Texts = tuple[str, str, str]
Readings = tuple[_Texts, _Texts, _Texts, _Texts]
NoticeKind = Literal["flood", "stale", "recovered"]

RULE_FIELDS = ("title", "summary", "content", "tags", "author", "link")
DEFAULT_RULE_FIELDS = ("title", "summary", "content", "tags")


class Secret:
    """A string that never prints itself: repr/str/format give ``***``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))


@dataclass(frozen=True)
class Jitter:
    """``jitter = "10%"`` (ratio of the interval) or ``jitter = "30s"``."""

    ratio: float = 0.0
    seconds: float = 0.0

    def amount(self, interval: float) -> float:
        """At most ``interval``, as 100% is: a longer duration (a global jitter a
        short-interval feed inherits) would put half the polls at the 1 s floor."""
        return min(self.seconds, interval) if self.seconds else interval * self.ratio

    def longer_than(self, interval: float) -> bool:
        """A duration that ``amount`` cuts to ``interval``."""
        return self.seconds > interval


@dataclass(frozen=True)
class Rule:
    name: str
    any: tuple[str, ...] = ()
    all: tuple[str, ...] = ()
    not_: tuple[str, ...] = ()
    fields: tuple[str, ...] = DEFAULT_RULE_FIELDS
    case_sensitive: bool = False
    sinks: tuple[str, ...] = ()


@dataclass(frozen=True)
class FeedSettings:
    """Per-feed effective values: the feed's own key, else ``[feedwatch]``'s, else the default.

    Durations are seconds (float); sizes are bytes (int).
    """

    interval: float = 900.0
    jitter: Jitter = Jitter(ratio=0.10)
    timeout: float = 30.0
    user_agent: str = ""
    max_body: int = 10 * 1024 * 1024
    max_entries: int = 5000
    max_age: float = 0.0
    first_poll: FirstPoll = "baseline"
    notify_on: tuple[ChangeKind, ...] = ("new", "updated")
    updates: UpdatesMode = "any"
    id_policy: IdPolicy = "auto"
    retention: float = 90 * 86400.0
    flood_limit: int = 50
    stale_after: float = 0.0
    duplicates: DuplicatesMode = "alert"
    # Text that is not a change (rule-term syntax): cut from both sides before comparing.
    ignore_text: tuple[str, ...] = ()


@dataclass(frozen=True)
class FeedConfig:
    name: str
    url: str
    settings: FeedSettings = FeedSettings()
    tags: tuple[str, ...] = ()
    # The sinks this feed's alerts go to: its own `sinks`, else `default_sinks`,
    # else every configured sink (resolved by the config loader).
    sinks: tuple[str, ...] = ()
    # Resolved rules: every `match` rule, then the inline "keywords" rule.
    # Empty = alert on every entry.
    rules: tuple[Rule, ...] = ()
    headers: tuple[tuple[str, str | Secret], ...] = ()
    allow_private: bool = False
    enabled: bool = True


@dataclass(frozen=True)
class SinkConfig:
    """One `[sinks.NAME]` table. ``options`` holds the type's own validated keys.

    email:   host, port, security, username, password (Secret|None), from_, to (tuple), timeout
    webhook: url (Secret), format, headers (tuple of (name, str|Secret)), secret (Secret|None), timeout
    command: argv (tuple), timeout
    jsonl:   path (str; "-" = stdout)
    console: (none) -- used by `demo`
    """

    name: str
    type: Literal["email", "webhook", "command", "jsonl", "console"]
    digest: float = 0.0
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Config:
    path: Path | None
    state: str
    feeds: tuple[FeedConfig, ...]
    rules: Mapping[str, Rule]
    sinks: Mapping[str, SinkConfig]
    defaults: FeedSettings = FeedSettings()
    concurrency: int = 16
    per_host: int = 2
    give_up_after: float = 3 * 86400.0
    default_sinks: tuple[str, ...] = ()
    metrics_listen: str = ""
    parse_workers: int = -1  # -1 = "auto"; 0 = a thread in this process
    shutdown_timeout: float = 10.0
    log_format: Literal["auto", "console", "json"] = "auto"
    log_level: str = "info"
    includes: tuple[Path, ...] = ()
    # Feed name -> the warning for its `keywords = []` (or `match`, `exclude`) that
    # leaves it no rule, so it alerts on every entry: "FILE:LINE: key: ...". Only the
    # loader tells an empty list from a key not given (config.rule_warnings says it).
    emptied_rules: Mapping[str, str] = field(default_factory=dict)
    # Where a jitter cut to the interval comes from ("FILE:LINE: key", for
    # config.jitter_over_interval): "" (no feed's name) -> [feedwatch]'s jitter key; a feed's name -> its
    # own jitter key, or its own interval key when it takes [feedwatch]'s jitter. Only
    # for the feeds whose jitter is cut (the loader scans lines only then).
    jitter_places: Mapping[str, str] = field(default_factory=dict)
    # "FILE:LINE: key: where: ..." for each rule term that looks like a /regex/ or a
    # list of terms and is not one (config.misread_term; rule_warnings says them).
    term_warnings: tuple[str, ...] = ()

    def feed(self, name: str) -> FeedConfig | None:
        return self._feeds_by_name.get(name)

    @functools.cached_property
    def _feeds_by_name(self) -> dict[str, FeedConfig]:
        # a check's summary and each body worker look a feed up per poll: a scan of
        # 5,000 feeds each time cost seconds
        by_name: dict[str, FeedConfig] = {}
        for f in self.feeds:
            by_name.setdefault(f.name, f)
        return by_name


# --------------------------------------------------------------------------
# Parsing (feedwatch.parse)
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Enclosure:
    url: str
    type: str | None = None
    length: int | None = None


@dataclass(frozen=True)
class EntrySnapshot:
    """One entry as read from one body, already normalised.

    Text fields are plain text (HTML removed, entities decoded, NFC, runs of
    spaces folded, paragraphs kept as blank lines). Times are aware UTC
    datetimes truncated to the second, or None. ``link`` is absolute where the
    feed allowed resolving it, any scheme (alerts drop non-http(s) ones).
    """

    entry_id: str | None
    title: str = ""
    link: str | None = None
    author: str | None = None
    published: datetime | None = None
    updated: datetime | None = None
    summary: str = ""
    content: str = ""
    tags: tuple[str, ...] = ()
    enclosures: tuple[Enclosure, ...] = ()
    # the offset in minutes of the zone name ``published`` was written with ("JST":
    # ``parse._ZONE_NAMES``), which an earlier version read as UTC; how it was written,
    # not what it says, so not compared (diff: the row such an entry had then)
    zone: int | None = field(default=None, compare=False, repr=False)
    # ``published`` as a release before ``parse.PARSE_VERSION`` 9 read it, where that
    # differs and the date names no zone of ``zone``'s: digits alone as a date
    # ("1732300817" as 1732-10-26), a zone of one to three digits as minutes or hours
    # ("-5" as five minutes, "+530" as 53 hours). How it was written, not what it
    # says, so not compared (diff: the row such an entry had then)
    misread: datetime | None = field(default=None, compare=False, repr=False)
    # (published, updated) as ``parse.PARSE_VERSION`` 22 and every release before read
    # them, where one differs: an RFC 822 time with PM as AM ("10:40:17 PM GMT" as
    # 10:40), a zone name after an ISO 8601 date as UTC ("10:40:17 EST"), an ISO date
    # read in the process's local zone. How it was written, not what it says, so not
    # compared (diff: a row stored then, ``diff._reread``)
    reread: tuple[datetime | None, datetime | None] | None = field(
        default=None, compare=False, repr=False
    )
    # (published, updated) as ``parse.PARSE_VERSION`` 26 and every release before read
    # them, where one differs: a date without its day ("10:00:00", "--12-01") on the
    # day of the poll, a numeric zone beyond 14 hours ("+1500") as written. How it was
    # written, not what it says, so not compared (diff: a row stored then,
    # ``diff._read_26``)
    read_26: tuple[datetime | None, datetime | None] | None = field(
        default=None, compare=False, repr=False
    )
    # (title, summary, content) as earlier releases read them, where one differs
    # (``Readings``). How the entry was written, not what it says, so not compared
    # (diff: a row stored then)
    earlier: Readings | None = field(default=None, compare=False, repr=False)
    # (title, summary, content) as fingerprint v7 (``parse.PARSE_VERSION`` 25 and every
    # release before) read them, where one differs: a bare "&" in a body that is not
    # well-formed XML read as an entity reference, "AT&T wins" as "AT&T; wins"
    # (``parse._amps_as_html5_reads``). ``earlier`` then holds the older releases'
    # readings of those texts. How the entry was written, not what it says, so not
    # compared (diff: a row stored then)
    loose: tuple[str, str, str] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class EntryKeys:
    """What the diff derives from one snapshot before comparing it (feedwatch.identity
    computes them: ``entry_keys``). Carried with a parse so a parse worker, or the
    parse cache for an unchanged item, saves the main process the hashing."""

    fingerprint: str
    entry_id: str  # stripped; "" when the entry has none
    link: str | None  # normalised
    content: str  # the content identity, the last resort of every policy
    # without a published time (the content key then covers the text): the content key
    # of the title and link alone (``identity.textless_identity``), which finds the row
    # of the entry edited, and the row a release before keyed it by (KEYS_VERSION v5.3)
    textless: str | None = None
    # for an entry with an enclosure: the content key that tells it apart by its
    # enclosures' URLs (``identity.told_identity``), its key where it is keyed by its
    # content (``identity.told_apart``)
    told: str | None = None
    # set by ``identity.told_apart`` only, under a policy: ``content`` is then ``told``,
    # and this the entry's content key without its enclosures (a release before's key)
    plain: str | None = None


# The end of the warning a body labelled in a single-byte encoding but UTF-8 gets: read
# right, nothing anyone running feedwatch can mend (the site's template), so the poll
# logs it at info, not as a warning a `-q check` from cron would mail at every change
MISLABELLED = ", but the body is UTF-8: read as UTF-8"


def only_a_note(warning: str) -> bool:
    """Whether a parse warning is only a note (``MISLABELLED``): logged at info."""
    return warning.endswith(MISLABELLED)


@dataclass(frozen=True)
class ParsedFeed:
    """What one body held. ``is_feed`` is False when nothing feed-like was found."""

    title: str | None
    link: str | None
    entries: Sequence[EntrySnapshot]  # a tuple, or feedwatch.partial's lazily decoded one
    is_feed: bool
    warnings: tuple[str, ...] = ()
    dropped_entries: int = 0  # beyond max_entries
    # the body ends before its document does (a dropped connection, a script that died
    # half-way): what is missing may be in a later body with the same validators, so
    # the poll keeps neither them nor its digest and the next poll reads it whole
    cut_short: bool = False
    # the feed's own author(s), which an Atom entry without one inherits (RFC 4287)
    author: str | None = None
    # entry_keys of each entry, in order, when the parser computed them (not part of
    # what was parsed: equal feeds may differ in whether they carry them)
    keys: tuple[EntryKeys, ...] | None = field(default=None, compare=False, repr=False)
    # the entries whose items are byte for byte those of the body the state last
    # committed (feedwatch.partial, when the poll named that body): not part of what
    # was parsed either
    settled: Settled | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Settled:
    """Entries of a body that the state already holds as they are: their items are byte
    for byte items of the body the state last committed, parsed in the same context, so
    the stored row of each is what that commit wrote from this very snapshot, or one
    the comparison found equal to it. ``diff`` counts them as seen and unchanged without
    reading or comparing them, under a policy in ``unique_under`` (one under which that
    body's identities were all distinct: with a duplicate, the row may be another
    item's)."""

    indexes: frozenset[int]
    unique_under: frozenset[str]


# --------------------------------------------------------------------------
# Fetching (feedwatch.fetch): a tagged union, so "not modified" and "failed"
# can never be confused.
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class FetchRequest:
    url: str
    timeout: float = 30.0
    max_body: int = 10 * 1024 * 1024
    user_agent: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    etag: str | None = None
    last_modified: str | None = None
    allow_private: bool = False


@dataclass(frozen=True)
class Fetched:
    status: int
    url: str  # final URL after redirects
    body: bytes
    headers: Mapping[str, str]  # lower-cased names
    etag: str | None = None
    last_modified: str | None = None
    permanent_redirect: str | None = None  # the new URL after a 301/308
    redirects: tuple[str, ...] = ()  # every hop, for `preview`
    elapsed: float = 0.0


@dataclass(frozen=True)
class NotModified:
    status: int  # 304
    url: str
    etag: str | None = None
    last_modified: str | None = None
    permanent_redirect: str | None = None
    elapsed: float = 0.0


@dataclass(frozen=True)
class FetchFailed:
    reason: str  # a sentence a person understands: "HTTP 503 Service Unavailable"
    status: int | None = None
    url: str | None = None
    retry_after: float | None = None  # seconds, from a 429/503 Retry-After
    gone: bool = False  # 410
    permanent_redirect: str | None = None
    elapsed: float = 0.0


FetchOutcome = Fetched | NotModified | FetchFailed


# --------------------------------------------------------------------------
# Stored state as the core sees it (feedwatch.store hands these out)
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredEntry:
    identity: str
    entry_id: str | None
    link: str | None
    title: str
    summary: str
    content: str
    published: datetime | None
    updated: datetime | None
    fingerprint: str
    first_seen: datetime
    last_seen: datetime
    new_alert_id: str  # the id the entry's `new` alert has or would have had (email threading)
    # in the body the state last committed (a row written by this poll: it will be);
    # read by the diff only (the mirror of GUID churn), never written from here
    in_body: bool = field(default=True, compare=False)


@dataclass(frozen=True)
class StoredNeed:
    """The stored entries ``diff`` reads for one body: those with one of ``identities``
    and those whose normalised link is one of ``links``. Any superset gives the same
    result (tests/test_diff.py): a store may return more, never fewer."""

    identities: tuple[str, ...]
    links: tuple[str, ...]
    # identities ``diff`` takes as seen and unchanged without their rows (``Settled``):
    # the store says whether each is a stored entry of the feed's last body
    settled: tuple[str, ...] = ()
    # every stored entry when one of these is not stored: the identities of entries
    # without an id, which a changed link changes; an unknown one may be a stored
    # entry by its title, published time and text (feedwatch.diff, "link churn")
    all_if_missing: tuple[str, ...] = ()


@dataclass(frozen=True)
class IdentityState:
    """The feed's id policy under ``auto``: the one in use, and a candidate waiting for a second poll."""

    policy: Literal["guid", "link", "content"] = "guid"
    candidate: Literal["guid", "link", "content"] | None = None


# --------------------------------------------------------------------------
# Diff results (feedwatch.diff)
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldChange:
    old: str | None
    new: str | None


@dataclass(frozen=True)
class Change:
    """A new or updated entry, before matching."""

    kind: ChangeKind
    identity: str
    entry: EntrySnapshot
    fingerprint: str
    changes: Mapping[str, FieldChange]  # {} for new
    new_alert_id: str


@dataclass(frozen=True)
class RuleMatch:
    rule: str
    terms: tuple[str, ...]


@dataclass(frozen=True)
class Alert:
    """One alert: the SPEC section 5 payload plus where it goes."""

    id: str
    kind: str  # new | updated | flood | stale | recovered
    feed: str
    payload: Mapping[str, Any]
    sinks: tuple[str, ...]
    thread_id: str | None = None  # the Message-ID seed of the entry's `new` alert
    identity: str | None = None
    duplicate_key: str | None = None  # `duplicates = "skip"`: one alert per key and sink
