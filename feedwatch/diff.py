"""Where an update is detected: stored state + a body's snapshots -> what changed.

Pure (SPEC section 4). The whole decision, in order:

    policy   = the identity policy (auto: detected, switched after two polls agree,
               stored entries re-keyed rather than made new)
    for each entry in the body (of several with one identity, the one likest its
    stored row: the same text, else link, else title, else times; else the first):
        known?   -> compare times (to the second) and normalised text (white space,
                    a URL's tracking parameters and what no reader sees aside:
                    ``visible_text``; a text that only moved between summary and
                    content is the same); where the text moved to that of a newer
                    stored entry of the same unique link that is not in the body,
                    compare with that one (it dropped its id with an edit, alerted as
                    new, and its id came back)
        unknown? -> same link (unique in the body; or moved to https or www. only)
                    and same text as a stored entry that is not in the body: the
                    same entry under a new id
                 -> no link, and its id came or went: the stored row of its content
                    key (title, published time) absent from the body, under the key
                    it had before (``_Unlinked``)
                 -> keyed by its content without a published time (a key that covers
                    its text), its title and link one entry's: the row absent from the
                    body of that title and link, without a time (``_Undated``)
                 -> keyed by its content, its key as a reader sees its text (without
                    a soft hyphen, ...: ``visible_text``) one absent row's: that row
                    (``_Unseen``)
                 -> keyed by its content, its date's zone read as UTC before: the row
                    of that time (``_Rezoned``); its date or title misread otherwise
                    before: the row of that time and title (``_Rezoned.misread``); its
                    date read otherwise by parse version 22 (AM/PM, an ISO zone name,
                    the process's zone): the row a release before stored under the key
                    of that time (and of its title as it read it), first seen no
                    earlier than the entry's time (``_reread``); its
                    title or text read otherwise by the release before: the row of
                    the key that reading gave it (``_keyed_before``)
                 -> keyed by its content, its published time moved (the feed re-dated
                    its entries: a zone fixed): the row of the last body absent from
                    this one with its title, link and text and another time, one such
                    row, where timestamp churn then covers the body, or where the body is
                    too small for churn and the feed stamps it with the time of each
                    request, as at the poll that stored the row (``_Redated.stamped``)
                 -> else new
    churn    = >= 3 known entries, every one re-stamped: timestamp-only moves are silent
    reread   = a known entry whose row, stored by a release before, holds its times as
               parse version 22 read them (``_reread``): its move is silent; or as parse
               version 26 read them (a date without its day, a zone beyond 14 hours:
               ``_read_26``)
    stamped  = in a body of one or two known entries, an entry stamped with the time of
               each request, at this poll and at the one that stored it: its
               timestamp-only move is silent
    stale    = a known entry back to its first version, its times moving back (a stale
               server or cache serving the old copy): silent
    baseline = first poll with first_poll = "baseline": record, alert nothing
    flood    = > flood_limit new and more than half the body: record, one notice

Everything seen is written back (upserts for new or changed rows, touches for
the rest), so the next poll compares with exactly what this one saw.

What of the state a comparison reads (``stored_needed``): the rows of the body's
identities and the rows whose normalised link is one of the body's (the candidates
for "the same entry under a new id"; and for an entry keyed by its id without a link,
the row of its content key), not every row the feed has kept within
``retention``; all of them only when the policy switches (every row is re-keyed).
A feed that keeps hundreds of old entries costs a changed poll what one that keeps
none does. Nor the rows of *settled* entries (``model.Settled``: items byte for byte
as in the body the state last committed): they count as seen and unchanged, which
is what comparing them would find, so a changed poll compares only its new and
edited items.

Which stored rows count (``within_retention``): those of the feed's last body and those
that left it less than ``retention`` ago. A row that left longer ago is forgotten (SPEC:
new is "an identity not seen in this feed within retention") whether or not a poll has
pruned it yet: the poll's commit prunes it.
"""

from __future__ import annotations

import os
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Generic, TypeVar

from feedwatch.alert import MAX_STRING, cap_text, format_time, safe_link
from feedwatch.identity import (
    FINGERPRINT_VERSION,
    Policy,
    alert_id,
    comparable_text,
    content_identity,
    content_identity_at,
    detect_policy_keys,
    entry_fingerprint,
    entry_keys,
    fingerprint,
    identity_for,
    key_for,
    legacy_forms,
    legacy_keys,
    link_variants,
    loose_keys,
    loose_link,
    misdecoded,
    normalize_link,
    normalize_space,
    read_loosely,
    textless_identity,
    told_apart,
)
from feedwatch.model import (
    Change,
    EntryKeys,
    EntrySnapshot,
    FeedSettings,
    FieldChange,
    IdentityState,
    Settled,
    StoredEntry,
    StoredNeed,
)
from feedwatch.text import holds_hidden, html_to_text, visible_text

if TYPE_CHECKING:
    from feedwatch.ignore_text import Ignore

TEXT_FIELDS = ("title", "summary", "content")
CHURN_MIN = 3
STAMP_TOLERANCE = timedelta(seconds=10)
"""How far a stamped time may be from the poll's own (the arrival of its response,
``poll.BodyJob.fetched_at``): a server's time to build and send the response, a clock a
few seconds off."""
REREAD_TOLERANCE = timedelta(minutes=10)
"""How long before an entry's own time the row found under the content key of its time
as read before may have been first seen and still be that entry's (``_reread``): a
feed's clock a little ahead."""
K = TypeVar("K")  # what ``_OnePair`` pairs by
_EMPTY = fingerprint("", "", "")  # an entry with no text says nothing of who it is


def _comparable(text: str) -> str:
    """``text`` as compared: what a reader sees of it (``visible_text``), white space
    folded, a URL's tracking parameters dropped (``identity.comparable_text``)."""
    return comparable_text(visible_text(text))


def _hidden_in(e: EntrySnapshot | StoredEntry) -> bool:
    """Whether a text field of ``e`` holds a character ``visible_text`` may drop."""
    return any(holds_hidden(t) for t in (e.title, e.summary, e.content))


@dataclass(frozen=True)
class DiffResult:
    changes: tuple[Change, ...]  # what may alert (before matching)
    upserts: tuple[StoredEntry, ...]
    touched: tuple[str, ...]
    rekeys: tuple[tuple[str, str], ...]
    identity: IdentityState
    new: int = 0  # new identities in the body (counted before matching)
    updated: int = 0  # entries that changed in a way `updates` counts
    silent: int = 0  # changes stored without alerting (churn, updates mode, link-only)
    flood: int = 0  # > 0: new entries recorded without alerts, one notice instead
    churn: bool = False
    # known entries whose moved times tracked the poll's time (``stamped_at_fetch``)
    stamped: tuple[str, ...] = ()
    baseline: bool = False
    duplicates: int = 0  # entries dropped because another one had the same identity
    # their indexes in the body: of several entries with one identity, all but the one
    # compared (``_likest``)
    dropped: tuple[int, ...] = ()
    # the row a re-key collision kept for an entry of the body, as compared: written
    # before ``upserts``, so the store's own rule for a collision does not decide
    kept: tuple[StoredEntry, ...] = ()
    # each entry's identity, in body order (as ``identity.told_apart`` keys it)
    identities: tuple[str, ...] = ()
    # of ``duplicates``, those of an identity not stored before this poll: entries nothing
    # tells apart, met for the first time
    repeated_new: int = 0
    # entries told apart by their enclosures stored silently, their group's one row
    # stored by a release before (``_first_told``)
    quiet: int = 0


def _choose_policy(
    settings: FeedSettings,
    state: IdentityState,
    keys: Sequence[EntryKeys],
    has_state: bool,
) -> IdentityState:
    if settings.id_policy != "auto":
        return IdentityState(policy=settings.id_policy, candidate=None)
    detected = detect_policy_keys(keys)
    if detected is None:
        return state
    if not has_state:
        return IdentityState(policy=detected, candidate=None)
    if detected == state.policy:
        return IdentityState(policy=state.policy, candidate=None)
    if state.candidate == detected:
        return IdentityState(policy=detected, candidate=None)
    return IdentityState(policy=state.policy, candidate=detected)


def _likest(
    row: StoredEntry,
    indexes: Sequence[int],
    entries: Sequence[EntrySnapshot],
    keys: Sequence[EntryKeys],
    ignore: Ignore | None,
) -> int:
    """Of the entries at ``indexes`` (body order), which share the stored ``row``'s
    identity, the one compared with it: the likest the row, by the same text (as the
    comparison reads it), then the same link, then the same title, then the same times;
    of equals, the first. So a feed that gives two stories one id (a CMS bug) compares
    the stored one in whatever order they come (a reorder alerts nothing, SPEC 6), and
    a real edit of it alerts once; the other is never compared."""

    def likeness(i: int) -> tuple[bool, bool, bool, bool]:
        e, k = entries[i], keys[i]
        return (
            not _text_changed(row, e, k.fingerprint, ignore),
            normalize_link(row.link) == k.link,
            not _differs(row.title, e.title, ignore, _legacy(row), _was(row, e, "title")),
            (row.published, row.updated) == (e.published, e.updated),
        )

    return max(indexes, key=likeness)  # (the first of the greatest)


def _settled_keys(
    settled: Settled | None,
    policy: Policy,
    identity: IdentityState,
    keys: Sequence[EntryKeys],
    has_rows: bool,
) -> frozenset[int]:
    """The entries taken as seen and unchanged without a comparison (``Settled``): none
    when the policy switches now (every row is re-keyed), when ``settled``'s body had
    duplicate identities under the policy, or when this body has (which of several is
    compared depends on the row: ``_likest``). (An entry's key is its own, whatever the
    body's others: ``identity.told_apart``.)"""
    if (
        settled is None
        or not settled.indexes
        or not has_rows
        or policy != identity.policy
        or policy not in settled.unique_under
    ):
        return frozenset()
    ids = {key_for(k, policy) for k in keys}
    return settled.indexes if len(ids) == len(keys) else frozenset()


def within_retention(
    stored: dict[str, StoredEntry], prune_before: datetime | None
) -> dict[str, StoredEntry]:
    """The stored rows a poll whose retention cuts at ``prune_before`` compares with:
    not those that left the feed's body (``in_body`` false) and were last seen before
    the cut. The store prunes them in that poll's commit, and in every successful poll
    (a 304 too), so after a time with no successful poll (the feed failing, or not
    polled) rows past the retention are still stored: compared, an entry back after
    ``retention`` was known (unchanged, no alert; edited, ``updated`` from a text long
    forgotten), where one poll in between made it new."""
    if prune_before is None:
        return stored
    expired = [k for k, r in stored.items() if not r.in_body and r.last_seen < prune_before]
    if not expired:
        return stored
    kept = dict(stored)
    for k in expired:
        del kept[k]
    return kept


def stored_needed(
    settings: FeedSettings,
    identity: IdentityState,
    keys: Sequence[EntryKeys],
    *,
    baselined: bool,
    has_rows: bool,
    settled: Settled | None = None,
    bases: Sequence[str] = (),
) -> StoredNeed | None:
    """Which stored entries ``diff`` needs for a body with these ``keys``; None: all of
    them (the identity policy switches now, so every stored row is re-keyed).

    ``has_rows``: whether the feed has any stored entry; pass the same, and the same
    ``settled``, to ``diff``. The settled entries' rows are not needed: their identities
    are named apart (``StoredNeed.settled``) for the store to vouch for."""
    state = _choose_policy(settings, identity, keys, baselined and has_rows)
    if has_rows and state.policy != identity.policy:
        return None
    keys = told_apart(keys, state.policy)
    skip = _settled_keys(settled, state.policy, identity, keys, has_rows)
    compared = [k for i, k in enumerate(keys) if i not in skip]
    own = [key_for(k, state.policy) for k in compared]
    identities = tuple(
        dict.fromkeys([*own, *(old for key in own for old in legacy_keys(key, bases))])
    )
    # an entry without a link keyed by its id: its row may be under its content key,
    # from before the id came (``_Unlinked``); an unknown one is no reason to read all
    unlinked = (
        c
        for k, key in zip(compared, own, strict=True)
        if _unlinked_id(k, key)
        for c in (k.content, k.textless)
        if c
    )
    # an entry told apart by its enclosures: the row a release before keyed it by, its
    # plain content key (``_first_told``; alone in the body, it takes it); an entry
    # without a link keyed by its id: the row of its told key, from before the id came
    # (``_Unlinked``)
    told = (
        c
        for k, key in zip(compared, own, strict=True)
        for c in (k.plain if key == k.content else k.told if _unlinked_id(k, key) else None,)
        if c
    )
    return StoredNeed(
        identities=tuple(dict.fromkeys([*identities, *unlinked, *told])),
        links=tuple(dict.fromkeys(v for k in compared if k.link for v in link_variants(k.link))),
        settled=tuple(key_for(keys[i], state.policy) for i in sorted(skip)),
        # (a link's spellings an earlier version stored: missing, the rule is its own)
        all_if_missing=tuple(dict.fromkeys(key for key in own if not _by_id(key))),
    )


def _first_told(
    body: Sequence[tuple[str, int, str]],
    keys: Sequence[EntryKeys],
    current: Mapping[str, StoredEntry],
    seen: set[str],
    plains: Counter[str],
) -> dict[str, str]:
    """The groups of entries of the body told apart by their enclosures
    (``identity.told_apart``), two or more of one plain content key (``plains``: how
    many identities of the body have each), none of whose keys is stored, with a row
    under that content key absent from the body: the state of a release before, which
    stored the group as one entry (the first of them it met). Which of them the row is
    cannot be known (a row holds no enclosure), so they are stored silently, once (as
    a feed's first poll stores its body), a new recording among them too; the row goes
    to the last of them (the oldest, in a feed that puts the newest first): left, it
    would be taken for a later entry of that text. (One such entry alone in the body
    takes its row: ``diff``.) A content key -> the key of the entry that takes its row."""
    groups: dict[str, list[str]] = {}
    for key, i, _ in body:
        plain = keys[i].plain
        if plain and key == keys[i].content and plains[plain] > 1:
            groups.setdefault(plain, []).append(key)
    return {
        plain: members[-1]
        for plain, members in groups.items()
        if len(members) == plains[plain]  # (a settled member: the group's keys are stored)
        and plain in current
        and plain not in seen
        and not any(m in current for m in members)
    }


def _by_id(identity: str) -> bool:
    """Whether an identity is the feed's own id for the entry (not its link or content)."""
    return identity.startswith("g:")


def _rekey(
    stored: Mapping[str, StoredEntry],
    policy: Policy,
    was: Policy,
    keys: Sequence[EntryKeys],
) -> tuple[dict[str, StoredEntry], list[tuple[str, str]], set[str]]:
    """Stored entries under a new policy, the renames, and the new keys several rows
    took (a collision: the most recently seen wins, of equal times the greater
    identity, and it keeps the earliest first_seen of the rows).

    A row is re-keyed as the body's entry it was under the old policy, where the body
    names that entry once: the row may lack what its new key is made of. (Stored under
    the link policy, a row has no id when the feed had none; when the feed starts
    giving ids, the row is the entry whose link it has, under that entry's new id,
    and an edit of it is an update, not a new entry.) A row the body does not name
    goes by its own fields."""
    via: dict[str, str | None] = {}
    for k in keys:
        old_key, new_key = key_for(k, was), key_for(k, policy)
        via[old_key] = new_key if via.get(old_key, new_key) == new_key else None
    out: dict[str, StoredEntry] = {}
    collided: set[str] = set()
    rekeys: list[tuple[str, str]] = []
    for old in sorted(stored.values(), key=lambda e: (e.last_seen, e.identity)):
        new_key = via.get(old.identity) or identity_for(old, policy)
        if new_key != old.identity:
            rekeys.append((old.identity, new_key))
        row, prev = replace(old, identity=new_key), out.get(new_key)
        if prev is not None:
            collided.add(new_key)
            row = replace(row, first_seen=min(row.first_seen, prev.first_seen))
        out[new_key] = row
    return out, rekeys, collided


def _differs(
    a: str, b: str, ignore: Ignore | None, legacy: bool = False, was: Sequence[str] = ()
) -> bool:
    """Whether two texts differ beyond white space, what no reader sees
    (``visible_text``) and what ``ignore_text`` cuts. ``a`` is the stored one. ``was``:
    ``b`` as the releases that may have written a row of an earlier fingerprint version
    read it (``_was``): they lost the text after a self-closed svg, an element named
    like svg-icon or a quoted "&lt;script&gt;", or read a bare "&" as a reference ("AT&T;
    wins"), so ``a`` that is one of ``was`` is ``b``
    as its release read it, the same text (an edit there is what it could not see).
    ``legacy``: a row of fingerprint version v1 or earlier
    (identity.FINGERPRINT_VERSION), whose text an earlier feedwatch may have read
    otherwise: a field declared plain had its tag-like words reduced away ("the
    <dialog> element" was "the element"), some versions kept a plain field's
    "<script>…</script>" that is now read as markup, and one stray byte that is not
    UTF-8 made the whole document read as windows-1252 or ISO-8859-2 ("DniprÃ³" for
    "Dnipró": ``identity.misdecoded``), alone or on top of the others (``_read_by_v1``). Such a
    difference is the conversion's, not the feed's. In a current row it is a real edit."""
    ka, kb = _comparable(a), _comparable(b)

    def same(x: str, y: str) -> bool:  # both already comparable
        return x == y or (ignore is not None and ignore.same(x, y))

    if same(ka, kb):
        return False
    if any(same(ka, _comparable(w)) for w in was):
        return False
    if _in_mojibake(a, ka, (b, *was), same):
        return False
    return not (legacy and _read_by_v1(a, ka, (b, *was), same))


def _in_mojibake(a: str, ka: str, texts: Sequence[str], same: Callable[[str, str], bool]) -> bool:
    """Whether ``a`` (comparable: ``ka``), a stored text beyond ASCII, is one of ``texts``
    (the new text and its earlier readings) read in mojibake (``identity.misdecoded``): every
    release before parse version 20 read a UTF-8 body labelled windows-1252 or
    ISO-8859-15 (or -2) in that encoding, so a row of any label may hold it. The same
    text: stored again silently, once (a feed that fixes its own mojibake alerts
    nothing either). The texts are read as a reader sees them first (``visible_text``):
    a soft hyphen the new text gained is no part of the old reading ("Brü\xadcke" read
    in windows-1252 holds a stray "Â" the row cannot have)."""
    if a.isascii():
        return False
    return any(
        same(ka, _comparable(m))
        for t in texts
        if not t.isascii()
        for m in misdecoded(visible_text(t))
    )


def _read_by_v1(a: str, ka: str, texts: Sequence[str], same: Callable[[str, str], bool]) -> bool:
    """Whether ``a`` (comparable: ``ka``), stored in a v1 row, is one of ``texts`` (the
    new text and its earlier readings) as a release of v1 read it: a plain field's
    tag-like words reduced away, or markup the stored text kept read now, and on top of
    either (or alone) the whole document read in mojibake. Only a row of v1 that differs
    comes here (once, at the first changed poll after the upgrade), and the mojibake
    only where both texts go beyond ASCII."""
    stored = [ka]
    if "<" in a:
        stored.append(_comparable(html_to_text(a)))
    reads = dict.fromkeys(texts)
    for text in texts:
        if "<" in text:
            reads[html_to_text(text)] = None
    if not a.isascii():
        for text in [t for t in reads if not t.isascii()]:
            reads.update(dict.fromkeys(misdecoded(text)))
    return any(same(x, _comparable(y)) for y in reads for x in stored)


_CHANGE_LEAD = 200  # characters kept before the first difference, for context


def _changed_view(a: str, b: str) -> FieldChange:
    """Old and new text, each capped as the payload caps strings. When the first
    difference lies beyond the cap, both show the same window that starts a little
    before it (and with "…"): capped from their start they would read the same."""
    ca, cb = cap_text(a), cap_text(b)
    if ca is a and cb is b:
        return FieldChange(ca, cb)
    # the first difference of the whole folded texts as seen (white space and what no
    # reader sees are no change): a space run before the cap that changed length, or a
    # soft hyphen, moves where each cap ends, and capped texts that differ only there
    # would hide an edit past it
    fa, fb = normalize_space(visible_text(a)), normalize_space(visible_text(b))
    first = len(os.path.commonprefix([fa, fb]))
    if _shows(ca, a, first) and _shows(cb, b, first):
        return FieldChange(ca, cb)
    start = max(0, first - _CHANGE_LEAD)
    rest = MAX_STRING - len("…".encode())
    return FieldChange("…" + cap_text(fa[start:], rest), "…" + cap_text(fb[start:], rest))


def _shows(capped: str, whole: str, at: int) -> bool:
    """Whether ``capped`` (``whole`` capped) shows the folded text as seen as far as its
    character ``at``, the first difference: a text not cut shows it all."""
    return capped is whole or at < len(normalize_space(visible_text(capped[: -len("…")])))


def _field_changes(
    old: StoredEntry, new: EntrySnapshot, ignore: Ignore | None = None
) -> dict[str, FieldChange]:
    changes: dict[str, FieldChange] = {}
    legacy = _legacy(old)
    moved = _moved_text(old, new, ignore, legacy)
    for f in TEXT_FIELDS:
        a, b = getattr(old, f), getattr(new, f)
        if (f == "title" or not moved) and _differs(a, b, ignore, legacy, _was(old, new, f)):
            changes[f] = _changed_view(a, b)
    if normalize_link(old.link) != normalize_link(new.link) and not _link_read_loosely(old, new):
        changes["link"] = FieldChange(safe_link(old.link), safe_link(new.link))
    # a row of a release before holding a time as it read the entry's (``_reread``):
    # the same time, read right now, no change
    was = (None, None) if new.reread is None or _current(old) else new.reread
    # a row holding a time as parse version 26 read the entry's (``_read_26``): the same
    was_26 = new.read_26 or (None, None)
    for f, read_before, read_26 in zip(("published", "updated"), was, was_26, strict=True):
        a_t, b_t = getattr(old, f), getattr(new, f)
        if (
            a_t != b_t
            and (read_before is None or a_t != read_before)
            and (read_26 is None or not _as_read_26(a_t, read_26, b_t))
        ):
            changes[f] = FieldChange(format_time(a_t), format_time(b_t))
    return changes


class _Absent:
    """The stored rows absent from a body, by normalised link (and ``loose_link``):
    candidates for an entry of that link under another identity (GUID churn)."""

    def __init__(
        self, current: Mapping[str, StoredEntry], seen: set[str], links: Iterable[str | None]
    ) -> None:
        self.loose_counts: Counter[str | None] = Counter(loose_link(v) for v in links if v)
        self.by_link: dict[str, list[StoredEntry]] = {}
        self.by_loose: dict[str | None, list[StoredEntry]] = {}
        rows = [r for r in current.values() if r.link and r.identity not in seen]
        for row in sorted(rows, key=lambda r: (-r.last_seen.timestamp(), r.identity)):
            row_link = normalize_link(row.link)
            if row_link:
                self.by_link.setdefault(row_link, []).append(row)
                self.by_loose.setdefault(loose_link(row_link), []).append(row)

    def same_entry(
        self,
        link: str,
        entry: EntrySnapshot,
        fp: str,
        ignore: Ignore | None,
        current: Mapping[str, StoredEntry],
        known: StoredEntry | None,
    ) -> StoredEntry | None:
        """The row seen last whose link and text are the entry's, the very link before a
        moved one; for a ``known`` entry, only one seen after its own, which was not in
        the last body: it left the feed when the other came (else the two were items of
        one body sharing the link, and this is an edit; and a row in the body is seen
        again only hourly, so its time alone cannot tell)."""
        if known is not None and known.in_body:
            return None
        loose = loose_link(link)
        if self.loose_counts[loose] != 1:
            return None
        for rows in (self.by_link.get(link, ()), self.by_loose.get(loose, ())):
            for row in rows:
                if row.identity not in current or (known and row.last_seen <= known.last_seen):
                    continue
                if not _text_changed(row, entry, fp, ignore):
                    return row
        return None


class _Unlinked:
    """An entry without a link whose id came or went (GUID churn needs a link; link
    churn, an entry and a row without ids): it is the stored row absent from the body
    with its content key (its title and published time), under the key it had before:
    that content key when the id came, an id when it went. Only where the answer is
    one: no other entry of the body has that content key, and (an id went) one row.
    A row whose text is not the entry's (an update) only when the entry has a published
    time: a title alone says little of which entry it is."""

    def __init__(
        self,
        body: Iterable[EntryKeys],
        current: Mapping[str, StoredEntry],
        seen: set[str],
        went: bool,
    ) -> None:
        self.counts: Counter[str] = Counter(k.content for k in body if not k.link)
        # (an id went) the absent rows keyed by an id without a link, by content key,
        # as they are before any is re-keyed (None: two have it)
        self.by_content: dict[str, StoredEntry | None] = {}
        for row in current.values() if went else ():
            if _by_id(row.identity) and row.identity not in seen and not normalize_link(row.link):
                c = content_identity(row)
                self.by_content[c] = None if c in self.by_content else row

    def same_entry(
        self,
        key: str,
        keys: EntryKeys,
        entry: EntrySnapshot,
        fp: str,
        ignore: Ignore | None,
        current: Mapping[str, StoredEntry],
        seen: set[str],
    ) -> StoredEntry | None:
        if keys.link or self.counts[keys.content] != 1:
            return None
        row: StoredEntry | None = None
        if _unlinked_id(keys, key):  # an id came: the row of its content key
            # (without a published time, a release before keyed it without its text)
            row = current.get(keys.content)
            if row is None and keys.told:  # (told apart by its enclosures: identity.told_apart)
                row = current.get(keys.told)
            if row is None and keys.textless:
                row = current.get(keys.textless)
            if row is not None and (row.identity in seen or _id_of(row) not in ("", keys.entry_id)):
                row = None
        elif _id_went(keys, key):  # an id went: the row of an id
            row = self.by_content.get(keys.plain or key)
            if row is not None and current.get(row.identity) is not row:
                row = None
        if row is None:
            return None
        if entry.published is None and _text_changed(row, entry, fp, ignore):
            return None
        return row


class _Rezoned:
    """An entry keyed by its content (title, link, published time) whose date names a
    zone east of UTC that an earlier version read as UTC ("19:40:17 JST",
    ``EntrySnapshot.zone``): its row is under the content key of that misread time, the
    instant plus that zone's offset (no other: a notice of one text a few hours after
    another is new). It is that row when the row is absent from the body, was in the
    last one, and has the entry's text, and each of its times is the entry's or moved by
    that offset; re-keyed, its times stored silently (the same instant, read right).
    Only while no entry of the body keyed by content with a published time is known as
    it is: a feed writes its dates one way, and entries of one title and link a zone's
    offset apart (an hourly notice) are otherwise new entries. Not west of UTC (HST,
    BRT): the misread time is then the instant less hours, where the notice of the same
    text before this one is (read right, by this version), and nothing tells the two
    apart; such an entry alerts once as new after the upgrade (documented)."""

    @staticmethod
    def needed(
        body: Sequence[tuple[str, int, str]],
        keys: Sequence[EntryKeys],
        entries: Sequence[EntrySnapshot],
        current: Mapping[str, StoredEntry],
        settled: bool,
    ) -> bool:
        timed = [
            key in current for key, i, _ in body if key == keys[i].content and entries[i].published
        ]
        return not settled and bool(timed) and not any(timed)

    @staticmethod
    def row(
        key: str,
        keys: EntryKeys,
        entry: EntrySnapshot,
        fp: str,
        ignore: Ignore | None,
        current: Mapping[str, StoredEntry],
        seen: set[str],
    ) -> StoredEntry | None:
        if key != keys.content or entry.published is None or not entry.zone or entry.zone < 0:
            return None
        shift = timedelta(minutes=entry.zone)
        was = entry.published + shift
        row = current.get(content_identity_at(entry, was))
        if (
            row is not None
            and row.identity not in seen
            and row.in_body
            and row.published == was
            and row.updated in (entry.updated, entry.updated and entry.updated + shift)
            and not _text_changed(row, entry, fp, ignore)
        ):
            return row
        return None

    @staticmethod
    def misread(
        key: str,
        keys: EntryKeys,
        entry: EntrySnapshot,
        current: Mapping[str, StoredEntry],
        seen: set[str],
    ) -> StoredEntry | None:
        """An entry keyed by its content whose row a release before fingerprint v3 keyed
        by what it misread: its published time (``EntrySnapshot.misread``: a Unix time
        read as a date in the 18th century, a zone of one to three digits as minutes or
        as 53 hours), its title (one stray byte that is not UTF-8 made it read the whole
        document in another encoding: ``identity.misdecoded``), or both. The row is under the
        content key of that time and title, and such releases wrote it (its label): it
        is the entry's, edited since or not (an edit alerts as updated), for it was the
        entry's key then. (A row this version writes never has such a label, and two
        entries that had the key then were one to the release that wrote it.) A title in
        mojibake alone may be in a row of any label: every release before parse version
        20 read a UTF-8 document labelled windows-1252 (ISO-8859-15, -2) so. Only for
        an entry with such a date or a title beyond ASCII: no other has a key to try."""
        if key != keys.content or (entry.misread is None and entry.title.isascii()):
            return None
        titles = (entry.title, *([] if entry.title.isascii() else misdecoded(entry.title)))
        times = (entry.published, *([] if entry.misread is None else [entry.misread]))
        for n, title in enumerate(titles):
            for m, when in enumerate(times):
                was = content_identity_at(entry, when, title, told=False)
                row = current.get(was) if n or m else None
                if (
                    row is not None
                    and row.identity not in seen
                    and row.published == when
                    and (not m or not row.fingerprint.startswith(_READ_RIGHT))
                ):
                    return row
        return None


def _reread(row: StoredEntry, entry: EntrySnapshot, published_only: bool = False) -> bool:
    """Whether ``row``, stored by a release before this one (a fingerprint of an earlier
    version: a row this one writes holds the times as read now), holds ``entry``'s times
    as parse version 22 (and every release before) read them, where this one reads them
    otherwise (``EntrySnapshot.reread``: "10:40:17 PM GMT" as 10:40, "10:40:17 EST"
    after an ISO date as UTC, an ISO date in the process's local zone). Such a row is
    that entry's, however long before its time as read now it was first seen (a CMS
    writing its local time labelled "GMT": "09:15 PM GMT" polled at 20:20Z is read
    21:15Z now).

    ``published_only``: its published time (the one a content key holds), for an entry
    keyed by its content whose row is looked up under that time's key, where identity
    is a guess: only a row first seen no earlier than the entry's time (its published
    time) as read now, less ``REREAD_TOLERANCE``. An entry is seen once it is out, so
    such a row was stored reading the entry's date then, whereas the row of another
    entry (the notice of the same text twelve hours before, "10:40 AM") was seen before
    that time."""
    was = entry.reread
    if was is None or _current(row):
        return False
    if not published_only:
        return (row.published, row.updated) == was
    if was[0] is None or row.published != was[0] or was[0] == entry.published:
        return False
    when = entry.published
    return when is not None and row.first_seen >= when - REREAD_TOLERANCE


def _read_26(row: StoredEntry, entry: EntrySnapshot) -> bool:
    """Whether ``row`` holds ``entry``'s times as parse version 26 (and every release
    before) read them, where this one reads them otherwise (``EntrySnapshot.read_26``:
    a date without its day, "10:00:00" or "--12-01", on the day of the poll; a zone
    beyond 14 hours, "+1500", as written). Any row, of any fingerprint version: this
    release reads such a date as none, or as UTC, so a row it stores holds that."""
    was = entry.read_26
    return was is not None and all(
        _as_read_26(stored, before, now)
        for stored, before, now in zip(
            (row.published, row.updated), was, (entry.published, entry.updated), strict=True
        )
    )


_DAY = timedelta(days=1)


def _as_read_26(stored: datetime | None, before: datetime | None, now: datetime | None) -> bool:
    """Whether a stored time is the time read now, or as parse version 26 read it
    (``before``): a date without its day (read as none now) on whatever day the poll
    that stored it read it, at the same time of day."""
    if stored == now or stored == before:
        return True
    if now is None and stored is not None and before is not None:
        return (stored - before) % _DAY == timedelta(0)
    return False


def _read_26_row(
    entry: EntrySnapshot, current: Mapping[str, StoredEntry], seen: set[str]
) -> StoredEntry | None:
    """The row of an entry keyed by its content whose published time parse version 26
    read otherwise (``_read_26``): under the key of that time (a date without its day,
    of the day this poll reads it on: a row stored on another day is not found)."""
    if entry.read_26 is None or entry.read_26[0] is None:
        return None
    row = current.get(content_identity_at(entry, entry.read_26[0]))
    if row is None or row.identity in seen or row.published != entry.read_26[0]:
        return None
    return row


def _reread_row(
    entry: EntrySnapshot, current: Mapping[str, StoredEntry], seen: set[str]
) -> StoredEntry | None:
    """The row of an entry keyed by its content whose published time the releases
    before read otherwise (``_reread``): under the key of that time, and of that time
    and its texts as they read them too (``EntrySnapshot.earlier``, its first reading:
    an HTML title naming a tag, "History of the &lt;blink&gt; tag", read "History of
    the tag" by v6), its key then where both changed."""
    if entry.reread is None or entry.reread[0] is None:
        return None
    was = entry.reread[0]
    keys = [content_identity_at(entry, was)]
    before = _as_read_before(entry)
    if before is not None:
        keys.append(content_identity_at(before, was))
    for key in keys:
        row = current.get(key)
        if row is not None and row.identity not in seen and _reread(row, entry, True):
            return row
    return None


class _OnePair(Generic[K]):
    """Unknown entries of the body and absent stored rows that share a key ``K`` (what
    ``_Undated``, ``_Unseen`` and ``_Redated`` each derive), paired where the answer is
    one: one entry of the body, and one row, have that key."""

    def __init__(self, body: Iterable[K], rows: Iterable[tuple[K, StoredEntry]]) -> None:
        self.counts: Counter[K] = Counter(body)
        self.rows: dict[K, StoredEntry | None] = {}  # None: two rows have it
        for k, row in rows:
            self.rows[k] = None if k in self.rows else row

    def row(self, k: K, current: Mapping[str, StoredEntry]) -> StoredEntry | None:
        """The row of ``k``, unless the answer is not one or it was re-keyed meanwhile."""
        if self.counts[k] != 1:
            return None
        return self.row_of(k, current)

    def row_of(self, k: K, current: Mapping[str, StoredEntry]) -> StoredEntry | None:
        """The one row of ``k`` (whatever entries of the body have it), unless it was
        re-keyed meanwhile."""
        row = self.rows.get(k)
        if row is None or current.get(row.identity) is not row:
            return None
        return row


class _Redated:
    """An entry keyed by its content (title, link, published time) whose published time
    the feed moved: a CMS that fixed its zone, or re-renders its dates with the offset of
    after a DST change (the same wall-clock text, every instant an hour off), gave every
    entry a new key. It is the stored row keyed by content with a published time, in the
    last body and absent from this one, of the entry's title, link and text (as compared,
    ``_text_key``) and another published time, where the answer is one: no other unknown
    entry of the body, and no other such row, has them. Found, it is taken only where
    timestamp churn then covers the body (``diff``: at least ``CHURN_MIN`` known
    entries, every one re-stamped), so it is stored silently in every mode, as entries
    with ids are. Or, in a body too small for churn, where the feed stamps the entry
    with the time of each request (``stamped``). Else the entry is new, as its key says
    (SPEC: ``content``): an entry re-dated alone is one, and so is a notice of the same
    text at another time."""

    @staticmethod
    def stamped(
        row: StoredEntry, entry: EntrySnapshot, now: datetime, previous: datetime | None
    ) -> bool:
        """The feed dates ``entry`` with the time of each request (a generated status
        feed, a script's RSS output): its moved times are this poll's (``now``), and the
        row's were those of the poll that stored it, the feed's last success
        (``previous``). As ``stamped_at_fetch`` for an entry keyed by its id, but a row
        keyed by its content is written anew by each re-stamp, so the first re-stamp is
        judged too: the row was stored by the last poll, dated with its time (an hourly
        notice polled soon after each hour was seen by polls since, that found it as it
        was; a daily notice dated 02:00 is not dated at the poll)."""
        return (
            previous is not None
            and abs(row.last_seen - previous) <= STAMP_TOLERANCE
            and _times_stamped(row, entry, now)
        )

    def __init__(
        self,
        body: Iterable[tuple[str, int, str]],
        keys: Sequence[EntryKeys],
        entries: Sequence[EntrySnapshot],
        current: Mapping[str, StoredEntry],
        seen: set[str],
        ignore: Ignore | None,
    ) -> None:
        self.pairs: _OnePair[tuple[str, str | None]] = _OnePair(
            (
                (_text_key(entries[i], ignore, fp), keys[i].link)
                for key, i, fp in body
                if key == keys[i].content and key not in current and entries[i].published
            ),
            (
                ((_text_key(row, ignore), normalize_link(row.link)), row)
                for row in current.values()
                if row.identity not in seen
                and row.in_body
                and row.identity.startswith("c:")
                and row.published is not None
            ),
        )

    def same_entry(
        self,
        key: str,
        keys: EntryKeys,
        entry: EntrySnapshot,
        fp: str,
        ignore: Ignore | None,
        current: Mapping[str, StoredEntry],
    ) -> StoredEntry | None:
        if key != keys.content or entry.published is None:
            return None
        k = (_text_key(entry, ignore, fp), keys.link)
        row = None if k[0] == _EMPTY else self.pairs.row(k, current)
        return None if row is None or row.published == entry.published else row


class _Undated:
    """An entry keyed by its content without a published time, whose key covers its text
    (``identity.content_identity_at``): edited, it has another key. It is the stored row
    keyed by its content, without a published time and absent from the body, of its
    title and link (``EntryKeys.textless``), where the answer is one: no other entry of
    the body has that title and link, and one such row has them. So items of distinct
    titles without a link or a date keep their edits as updates (and so does a feed of
    one untitled post), while a status page's items all titled "Status", or a
    microblog's untitled posts, are each an entry (an edit of one is a new entry). It is
    also the row a release before ``KEYS_VERSION`` v5.3 keyed by title and link alone:
    an entry whose text is that row's finds it by link churn, one edited since by this
    rule."""

    def __init__(
        self, body: Iterable[EntryKeys], current: Mapping[str, StoredEntry], seen: set[str]
    ) -> None:
        self.pairs: _OnePair[str] = _OnePair(
            (k.textless for k in body if k.textless),
            (
                (t, row)
                for row in current.values()
                if row.identity not in seen
                and row.identity.startswith("c:")
                # None: the row has a published time
                and (t := textless_identity(row)) is not None
            ),
        )

    def same_entry(
        self,
        key: str,
        keys: EntryKeys,
        entry: EntrySnapshot,
        current: Mapping[str, StoredEntry],
    ) -> StoredEntry | None:
        t = keys.textless
        if t is None or key != keys.content:
            return None
        row = self.pairs.row(t, current)
        if row is not None or self.pairs.counts[t] != 1:
            return row
        # its title as a release before parse version 26 read it, a bare "&" as a
        # reference ("AT&T; wins"): the row such a release stored of that title and link
        was = _as_read_by_v7(entry)
        if was is None or was.title == entry.title:
            return None
        t7 = textless_identity(was)
        if t7 is None or self.pairs.counts[t7]:
            return None
        row = self.pairs.row_of(t7, current)
        return None if row is None or _current(row) else row


class _Unseen:
    """An entry keyed by its content (title, link, published time; without one, its text
    too) whose key differs from its row's only by what no reader sees (``visible_text``:
    a soft hyphen in its title). It is the stored row keyed by content, absent from the
    body, with its content key as seen, where the answer is one: no other entry of the
    body, and no other such row, has that key. Link churn finds most such rows by their
    text; not one of an empty text, nor of a text other entries share (links apart)."""

    def __init__(
        self,
        body: Iterable[tuple[str, EntrySnapshot, EntryKeys]],
        current: Mapping[str, StoredEntry],
        seen: set[str],
    ) -> None:
        self.pairs: _OnePair[str] = _OnePair(
            (_seen_key(e, key) for key, e, k in body if key == k.content),
            (
                (_seen_key(row, row.identity), row)
                for row in current.values()
                if row.identity not in seen and row.identity.startswith("c:")
            ),
        )

    def same_entry(
        self, key: str, keys: EntryKeys, entry: EntrySnapshot, current: Mapping[str, StoredEntry]
    ) -> StoredEntry | None:
        if key != keys.content:
            return None
        return self.pairs.row(_seen_key(entry, key), current)


def _seen_key(e: EntrySnapshot | StoredEntry, key: str) -> str:
    """The content key of ``e`` (keyed ``key``) as a reader sees it: of its texts without
    what ``visible_text`` drops; ``key`` for one that holds none."""
    if not _hidden_in(e):
        return key
    shown = replace(
        e,
        title=visible_text(e.title),
        summary=visible_text(e.summary),
        content=visible_text(e.content),
    )
    return content_identity(shown)


def _same_entry(
    row: StoredEntry, entry: EntrySnapshot, fp: str, ignore: Ignore | None, link: str | None
) -> bool:
    """Whether a row under another spelling of the entry's id is the entry's: its text
    or its (normalised) link is the entry's."""
    return (link is not None and normalize_link(row.link) == link) or not _text_changed(
        row, entry, fp, ignore
    )


def _unlinked_id(keys: EntryKeys, key: str) -> bool:
    """Whether an entry keyed ``key`` is keyed by its id and has no link."""
    return not keys.link and _by_id(key)


def _id_went(keys: EntryKeys, key: str) -> bool:
    """Whether an entry keyed ``key`` is keyed by its content for want of an id and a link."""
    return key == keys.content and not keys.entry_id and not keys.link


def _id_of(row: StoredEntry) -> str:
    return row.entry_id.strip() if row.entry_id else ""


def _text_changed(
    old: StoredEntry, new: EntrySnapshot, fp: str, ignore: Ignore | None = None
) -> bool:
    legacy = _legacy(old)
    if _current(old):
        if old.fingerprint == fp:
            return False
        if ignore is None and _ascii(old) and not _hidden_in(new):
            # the hashes of the comparable texts differ: so do they, unless the summary's
            # and the content's only swapped (``_moved_text``); a text beyond ASCII may be
            # the new one in mojibake (``_in_mojibake``), or hold what no reader sees
            # (``visible_text``, which the fingerprint hashes as written)
            return old.fingerprint != fingerprint(new.title, new.content, new.summary)
    # A fingerprint of another version says nothing, and one of the whole text says
    # nothing of the text ``ignore_text`` leaves: compare the stored text.
    if _differs(old.title, new.title, ignore, legacy, _was(old, new, "title")):
        return True
    return any(
        _differs(getattr(old, f), getattr(new, f), ignore, legacy, _was(old, new, f))
        for f in ("summary", "content")
    ) and not _moved_text(old, new, ignore, legacy)


def _ascii(row: StoredEntry) -> bool:
    return row.title.isascii() and row.summary.isascii() and row.content.isascii()


def _stored_in_mojibake(old: StoredEntry, new: EntrySnapshot) -> bool:
    """Whether each text field of ``new`` that differs from ``old``'s is stored in
    mojibake (``_in_mojibake``), one at least: for ``explain``."""
    found = False
    for f in TEXT_FIELDS:
        a, b = getattr(old, f), getattr(new, f)
        ka = _comparable(a)
        if ka == _comparable(b):
            continue
        if not _in_mojibake(a, ka, (b, *_was(old, new, f)), str.__eq__):
            return False
        found = True
    return found


def _moved_text(
    old: StoredEntry, new: EntrySnapshot, ignore: Ignore | None, legacy: bool = False
) -> bool:
    """Whether the summary's and the content's texts only moved between the two fields:
    each is the other's of before (an RSS description that was read as the summary,
    now an Atom or JSON Feed content; the other empty). The same texts in another
    layout, which a feed's change of format brings: no edit. A text that went or came
    (the content emptied, the summary kept) is one."""
    return not _differs(
        old.summary, new.content, ignore, legacy, _was(old, new, "content")
    ) and not _differs(old.content, new.summary, ignore, legacy, _was(old, new, "summary"))


def _legacy(old: StoredEntry) -> bool:
    """A row written before fields declared plain kept their tag-like words: of
    fingerprint version v1 or earlier (``_differs``)."""
    return not old.fingerprint.startswith(_PLAIN_KEPT)


# the fingerprint labels of rows written since plain fields keep their tag-like words
_PLAIN_KEPT = ("v2:", "v3:", "v4:", "v5:", "v6:", "v7:", "v8:")
# the fingerprint labels of rows written since every date is read as now, and a UTF-8
# document with a stray byte as UTF-8 (``_Rezoned.misread``)
_READ_RIGHT = ("v3:", "v4:", "v5:", "v6:", "v7:", "v8:")


def _was(old: StoredEntry, new: EntrySnapshot, f: str) -> tuple[str, ...]:
    """``new``'s text field ``f`` as the releases that may have written ``old`` read it,
    where that differs (``EntrySnapshot.earlier``): for a v6 or a v5 row, its first
    reading: v6's where it read otherwise than now (in a field without a tag of its own,
    a lone "&lt;dialog&gt;" reduced as a tag; ruby's readings inline), else v5's (in a
    field of markup of its own, "Vec&lt;u8&gt;" reduced to "Vec"; "Dnipro1"; a MathML
    annotation read), which read such a field and ruby as v6 did, and a v6 row holding
    v6's reading of the others is the text now; for a v4 row, as v4 read it (also the
    text after <svg-icon>, a head, an xml or an svg left open lost); for a v2 or v3
    row, as the releases before v4 read it (the text after a self-closed svg lost too);
    for a v1 row, that or as the first releases of v1 read it (before parse version 3:
    the text after a quoted "&lt;script&gt;" lost too); for a current row, none
    (``_differs``). A v7 row: as v7 read it, a bare "&" in a body that was not
    well-formed XML as a reference ("AT&T; wins": ``EntrySnapshot.loose``); every older
    release read it so too, and ``earlier`` then holds their readings of those texts.
    Where the body read now is well-formed (its publisher fixed the XML since: no
    ``loose``), each of those readings as such a body read it bare (``_as_v7_read``)."""
    if _current(old):
        return ()
    i = TEXT_FIELDS.index(f)
    if old.fingerprint.startswith("v7:"):
        return (new.loose[i],) if new.loose is not None else _as_v7_read(getattr(new, f))
    if new.earlier is None:
        return _as_v7_read(getattr(new, f))
    if old.fingerprint.startswith(("v6:", "v5:")):
        was: tuple[str, ...] = (new.earlier[0][i],)
    elif old.fingerprint.startswith("v4:"):
        was = (new.earlier[1][i],)
    elif _legacy(old):
        was = tuple(dict.fromkeys((new.earlier[2][i], new.earlier[3][i])))
    else:
        was = (new.earlier[2][i],)
    if new.loose is not None:
        return was
    bare = (r for w in (getattr(new, f), *was) for r in _as_v7_read(w))
    return tuple(dict.fromkeys((*was, *bare)))


def _link_read_loosely(old: StoredEntry, new: EntrySnapshot) -> bool:
    """Whether ``old``, a row of a release before, holds ``new``'s link as releases before
    parse version 26 read it from a body that was not well-formed ("?p=1〈=en&b=2" for
    "?p=1&lang=en&b=2": ``identity.loose_keys``): the same link."""
    if _current(old) or not new.link or "&" not in new.link:
        return False
    was, now = normalize_link(old.link), normalize_link(new.link)
    return bool(was and now) and "l:" + str(was) in loose_keys("l:" + str(now))


def _as_v7_read(text: str) -> tuple[str, ...]:
    """``text`` as fingerprint v7 and every release before read it from a body that was
    not well-formed XML, each "&" of it bare (``identity.read_loosely``: "AT&T wins" as
    "AT&T; wins"), where that differs: the rows they stored of an entry whose publisher
    fixed the XML since. Of the text itself: a field of HTML whose bare "&" and a name
    HTML5 reads without a ";" ran on ("&copy2024", read "©2024;" then) is not it."""
    was = _v7_text(text)
    return () if was == text else (was,)


def _v7_text(text: str) -> str:
    """``text`` read bare as v7 read it (``identity.read_loosely``), composed as the
    parse composes a text (NFC: "〈" of ``&lang`` is U+3008)."""
    was = read_loosely(text)
    return was if was == text else unicodedata.normalize("NFC", was)


def _keyed_before(
    key: str,
    keys: EntryKeys,
    entry: EntrySnapshot,
    current: Mapping[str, StoredEntry],
    seen: set[str],
) -> StoredEntry | None:
    """The row of an entry keyed by its content (``key``) under the content key the
    releases before (fingerprint v6, v5) gave it, where they read its title, or its
    text (a key without a published time covers it: ``content_identity_at``), otherwise
    (``EntrySnapshot.earlier``, its first reading): "Vec&lt;u8&gt;" in its description
    read "Vec", "Queue &lt;eu-west&gt; down" in an HTML title "Queue down", a title's
    ruby with its readings inline; or fingerprint v7 gave it, reading a bare "&" as a
    reference ("AT&T; wins": ``EntrySnapshot.loose``). Absent
    from the body; compared as such a row is (``_was``), so unchanged it is stored again
    silently under its new key."""
    if key != keys.content:
        return None
    for before in (_as_read_by_v7(entry), _as_read_before(entry)):
        if before is None:
            continue
        was = content_identity_at(before, entry.published)
        if was != key and was not in seen and was in current:
            return current[was]
    return None


def _as_read_by_v7(entry: EntrySnapshot) -> EntrySnapshot | None:
    """``entry`` with its texts as fingerprint v7 read them, where it read one otherwise
    (a bare "&" as a reference: ``EntrySnapshot.loose``; from a body well-formed now,
    its texts as v7 read them bare: ``identity.read_loosely``)."""
    if entry.loose is not None:
        title, summary, content = entry.loose
    else:
        title, summary, content = (_v7_text(t) for t in (entry.title, entry.summary, entry.content))
        if (title, summary, content) == (entry.title, entry.summary, entry.content):
            return None
    return replace(entry, title=title, summary=summary, content=content)


def _as_read_before(entry: EntrySnapshot) -> EntrySnapshot | None:
    """``entry`` with its texts as the releases before (fingerprint v6, v5) read them,
    where they read one otherwise (``EntrySnapshot.earlier``, its first reading)."""
    if entry.earlier is None:
        return None
    title, summary, content = entry.earlier[0]
    return replace(entry, title=title, summary=summary, content=content)


def _current(old: StoredEntry) -> bool:
    """A row whose fingerprint is of this version: comparable with a new one (a row of
    another is compared by its stored text)."""
    return old.fingerprint.startswith(FINGERPRINT_VERSION + ":")


def _ignore(terms: tuple[str, ...], feed: str) -> Ignore | None:
    """The feed's ``ignore_text`` compiled, with this poll's budget of regex time; its
    module (and the rules' regex engine) is imported only for a feed that sets one."""
    if not terms:
        return None
    from feedwatch.ignore_text import compile_ignore

    compiled = compile_ignore(terms)
    return None if compiled is None else compiled.for_poll(feed)


def _text_key(e: EntrySnapshot | StoredEntry, ignore: Ignore | None, fp: str | None = None) -> str:
    """What link churn compares an entry's text by: its fingerprint, of the text a reader
    sees (``visible_text``) and ``ignore_text`` leaves when the feed sets it. (Computed
    from both texts at each comparison, never stored: an entry keyed by its content
    whose title gained a soft hyphen has another key, and is its row by this.)"""
    if ignore is not None or _hidden_in(e):
        texts = [visible_text(t) for t in (e.title, e.summary, e.content)]
        if ignore is not None:
            texts = [ignore.clean(t) for t in texts]
        return fingerprint(*texts)
    return fp if fp is not None else entry_fingerprint(e)


def _latest(e: EntrySnapshot | StoredEntry) -> datetime | None:
    times = [t for t in (e.published, e.updated) if t is not None]
    return max(times) if times else None


def stamped_at_fetch(old: StoredEntry, new: EntrySnapshot, now: datetime) -> bool:
    """The feed stamps this entry with the time of each request (a status page, a
    generated feed), so its moved times say nothing of it: every time that moved is
    within ``STAMP_TOLERANCE`` of this poll's time, and the stored version was itself
    written by a later poll than the one that first saw the entry, with its times within
    the tolerance of that poll's (``last_seen``: a changed row is written by the poll
    that saw it, and an unchanged one is only touched on the hour, which moves it away).

    Timestamp churn covers such feeds from three entries on; this is for one or two
    (``diff`` applies it only there). The first re-stamp after the entry is first seen
    still alerts. A real edit is stamped when it was made: to be taken for a stamp it
    would have to land within the tolerance before a poll, twice in a row, and change
    no text."""
    if old.last_seen <= old.first_seen:
        return False
    return _times_stamped(old, new, now)


def _times_stamped(old: StoredEntry, new: EntrySnapshot, now: datetime) -> bool:
    """Every time of ``new`` that differs from ``old``'s is within ``STAMP_TOLERANCE`` of
    ``now``, and was (in ``old``) within it of ``old.last_seen`` (one time at least)."""
    moved = [
        (o, n) for o, n in ((old.published, new.published), (old.updated, new.updated)) if o != n
    ]
    if not moved:
        return False
    return all(
        was is not None
        and now_is is not None
        and abs(was - old.last_seen) <= STAMP_TOLERANCE
        and abs(now_is - now) <= STAMP_TOLERANCE
        for was, now_is in moved
    )


def stale_copy(feed: str, key: str, old: StoredEntry, new: EntrySnapshot, fp: str) -> bool:
    """``new`` is the version ``old``'s entry was first seen as, and its times go back:
    the old copy of a corrected story, served by a stale server behind the site's load
    balancer or a cache, which feeds flip to and from. An editor's revert moves the
    time on (or keeps it), so it still alerts; so does a revert in a feed without times.

    The row's ``new_alert_id`` was made under the identity the entry had then: a row
    re-keyed since (a policy switch) is matched under each policy's key of ``new``."""
    was, now = _latest(old), _latest(new)
    if was is None or (now is not None and now >= was):
        return False
    policies: tuple[Policy, ...] = ("guid", "link", "content")
    keys = dict.fromkeys((key, *(identity_for(new, p) for p in policies)))
    return any(
        old.new_alert_id == alert_id(feed, k, "new", fp, new.published, new.updated) for k in keys
    )


def _row(
    feed: str,
    identity: str,
    entry: EntrySnapshot,
    fp: str,
    now: datetime,
    old: StoredEntry | None,
) -> StoredEntry:
    return StoredEntry(
        identity=identity,
        entry_id=entry.entry_id,
        link=entry.link,
        title=entry.title,
        summary=entry.summary,
        content=entry.content,
        published=entry.published,
        updated=entry.updated,
        fingerprint=fp,
        first_seen=old.first_seen if old else now,
        last_seen=now,
        new_alert_id=old.new_alert_id
        if old
        else alert_id(feed, identity, "new", fp, entry.published, entry.updated),
    )


def diff(
    feed: str,
    stored: Mapping[str, StoredEntry],
    entries: Sequence[EntrySnapshot],
    *,
    settings: FeedSettings,
    identity: IdentityState,
    baselined: bool,
    now: datetime,
    keys: Sequence[EntryKeys] | None = None,
    has_rows: bool | None = None,
    settled: Settled | None = None,
    bases: Sequence[str] = (),
    previous: datetime | None = None,
) -> DiffResult:
    """``keys``: ``entry_keys`` of each entry, when the parse brought them (computed
    here otherwise; the result is the same). ``stored``: every stored entry of the feed,
    or (with ``has_rows``, whether it has any) at least those ``stored_needed`` names.
    ``settled``: entries the state holds as they are (``model.Settled``), counted as
    seen and unchanged without their rows; the result is the one a comparison of each
    with its row gives (tests/test_diff.py), and their snapshots are never read.
    ``bases``: what a relative id may have been resolved against when its row was
    stored (``identity.legacy_keys``, which also names an id's escaped form;
    ``parse.id_bases``). ``previous``: the feed's last successful poll (its record's
    ``last_success``), which stored the rows an entry stamped at each request was re-
    stamped from (``_Redated.stamped``); None: no entry keyed by its content is taken
    for one."""
    if keys is None or len(keys) != len(entries):
        keys = [entry_keys(e) for e in entries]
    if has_rows is None:
        has_rows = bool(stored)
    ignore = _ignore(settings.ignore_text, feed)
    state = _choose_policy(settings, identity, keys, baselined and has_rows)
    keys = told_apart(keys, state.policy)
    current: dict[str, StoredEntry] = dict(stored)
    rekeys: list[tuple[str, str]] = []
    collided: set[str] = set()
    if has_rows and state.policy != identity.policy:
        if not stored:
            raise ValueError("the identity policy switches: diff needs every stored entry")
        current, rekeys, collided = _rekey(stored, state.policy, identity.policy, keys)
    skip = _settled_keys(settled, state.policy, identity, keys, has_rows)

    # Identities of this body; of several entries with one identity, the one compared
    # is the one likest its stored row (``_likest``), the first when none is stored.
    own = [key_for(k, state.policy) for k in keys]
    of_key: dict[str, list[int]] = {}
    for i, key in enumerate(own):
        of_key.setdefault(key, []).append(i)
    compared = {
        key: _likest(current[key], idx, entries, keys, ignore)
        if len(idx) > 1 and key in current
        else idx[0]
        for key, idx in of_key.items()
    }
    body: list[tuple[str, int, str]] = []  # identity, index in entries, fingerprint
    links: dict[str, str | None] = {}  # identity -> normalised link
    seen: set[str] = set()
    touched: list[tuple[int, str]] = []  # (index in entries, identity): body order
    dropped: list[int] = []
    for i, (k, key) in enumerate(zip(keys, own, strict=True)):
        if compared[key] != i:
            dropped.append(i)
            continue
        seen.add(key)
        links[key] = k.link
        if i in skip:
            touched.append((i, key))
            continue
        body.append((key, i, k.fingerprint))
    body_size = len(seen)
    settled_seen = len(touched)

    # Entries told apart by their enclosures (``identity.told_apart``): how many
    # identities the body has of each plain content key (copies nothing tells apart are
    # one). A group of several whose key holds the one row of them all, stored by a
    # release before: stored as they are, silently (``_first_told``).
    plains: Counter[str] = Counter(
        p for p, _ in {(k.plain, o) for k, o in zip(keys, own, strict=True) if k.plain}
    )
    quiet = _first_told(body, keys, current, seen, plains) if plains else {}
    for plain, last in quiet.items():
        rekeys.append((plain, last))
        current[last] = replace(current.pop(plain), identity=last)

    # GUID churn: an unknown id whose link (unique in the body) and text match a
    # stored entry that is absent from this body is that entry under a new id (of
    # several such rows, the one seen last: whatever rows the store returned).
    # A settled entry is known, so no candidate, but its link counts: one that shares
    # it makes the link ambiguous, as in a comparison of every entry.
    # The link may have moved to https or to (or from) www. with the id (a permalink):
    # such a row is a candidate too, after one with the very link.
    absent: _Absent | None = None  # built for the first entry that needs it

    # Link churn: an entry without an id (its identity is its link, or its content with
    # its link) whose link changes at every fetch (a tracking or cache-busting parameter
    # no list names: Bing News) while its title, published time and text do not is the
    # stored entry without an id that is absent from this body with those: re-keyed, its
    # new link stored silently. Only where that text and time are one entry's, among
    # the unknown entries of the body and among the absent rows (``stored_needed``
    # reads every row then). Not an entry told apart by its enclosures from others of
    # the body (``identity.told_apart``): their text says nothing of which one it is (a
    # recording new in a window that dropped the oldest is not that one).
    unknown_by_text: Counter[tuple[str, datetime | None]] = Counter()
    absent_by_text: dict[tuple[str, datetime | None], StoredEntry | None] = {}
    text_keys: dict[str, str] = {}  # unknown identity -> its text's key
    if any(k not in current and not _by_id(k) for k, _, _ in body):
        for key, i, fp in body:
            if key not in current and not _by_id(key) and plains[keys[i].plain or ""] < 2:
                text_key = _text_key(entries[i], ignore, fp)
                if text_key != _EMPTY:
                    text_keys[key] = text_key
                    unknown_by_text[(text_key, entries[i].published)] += 1
        for row in current.values():
            if row.identity in seen or _by_id(row.identity):
                continue
            text = (_text_key(row, ignore), row.published)
            if text[0] != _EMPTY:
                # a second row with the same text and time: no answer
                absent_by_text[text] = None if text in absent_by_text else row

    # An id that came or went on an entry without a link: ``_Unlinked``.
    unlinked: _Unlinked | None = None
    if any(not keys[i].link and key not in current for key, i, _ in body):
        # the body's entries: those compared and (so far in ``touched``) the settled
        firsts = [keys[i] for _, i, _ in body] + [keys[i] for i, _ in touched]
        went = any(_id_went(keys[i], key) and key not in current for key, i, _ in body)
        unlinked = _Unlinked(firsts, current, seen, went)

    # An entry keyed by its content without a published time, edited: ``_Undated``.
    undated: _Undated | None = None
    if any(
        keys[i].textless and key == keys[i].content and key not in current for key, i, _ in body
    ):
        undated = _Undated(
            [keys[i] for _, i, _ in body] + [keys[i] for i, _ in touched], current, seen
        )

    # An entry keyed by its content whose key differs by what no reader sees: ``_Unseen``.
    unseen: _Unseen | None = None
    if any(key == keys[i].content and key not in current for key, i, _ in body):
        unseen = _Unseen(((key, entries[i], keys[i]) for key, i, _ in body), current, seen)

    # Entries keyed by content whose published time an earlier version misread: ``_Rezoned``.
    rezone = _Rezoned.needed(body, keys, entries, current, bool(touched))
    rezoned: set[str] = set()

    # Entries keyed by content that the feed re-dated: ``_Redated``, taken after the rest.
    # (with a settled entry there is no churn, but a body of one or two may be stamped)
    redated: _Redated | None = None
    if (not touched or body_size < CHURN_MIN) and any(
        key == keys[i].content and key not in current and entries[i].published for key, i, _ in body
    ):
        redated = _Redated(body, keys, entries, current, seen, ignore)
    pending: list[tuple[int, str, EntrySnapshot, str, StoredEntry]] = []
    restamped: set[str] = set()  # of those, the entries stamped at each request

    new_items: list[tuple[str, EntrySnapshot, str]] = []
    chosen: list[StoredEntry] = []  # DiffResult.kept
    known: list[tuple[int, str, EntrySnapshot, str, StoredEntry, bool, bool]] = []
    quieted: list[StoredEntry] = []
    for key, i, fp in body:
        entry = entries[i]
        old: StoredEntry | None = current.get(key)
        if keys[i].plain in quiet:
            quieted.append(_row(feed, key, entry, fp, now, old))
            continue
        alone = keys[i].plain
        if old is None and alone and plains[alone] == 1 and alone not in seen:
            # told apart by its enclosures, alone in the body of its plain content key:
            # the row of that key is its own, as a release before keyed it (or as it was
            # before it had an enclosure)
            cand = current.get(alone)
            if cand is not None:
                rekeys.append((alone, key))
                del current[alone]
                old = replace(cand, identity=key)
                current[key] = old
        if old is None:
            # a relative id stored resolved against the feed's URL, as it once was: the
            # same entry, whatever its text (feedwatch.parse._ids_as_given); an id
            # stored escaped from a body that was not well-formed (_tags_decoded_leniently):
            # the same entry where its text or its link is the row's (else the row may
            # be another entry's, whose id is that spelling decoded once more); the id or
            # link as a release before parse version 26 read it from a body that was not
            # well-formed ("?p=1&b;=2"): that release's row of the entry, whatever its text
            bare = loose_keys(key)
            for was, spelled in legacy_forms(key, bases):
                kept = current.get(was)
                if kept is None or was in seen:
                    continue
                if (
                    not spelled
                    or (was in bare and not _current(kept))
                    or _same_entry(kept, entry, fp, ignore, links[key])
                ):
                    rekeys.append((was, key))
                    del current[was]
                    old = replace(kept, identity=key)
                    current[key] = old
                    break
        if old is None:  # the row an earlier release keyed otherwise: a zone, a misreading
            cand = _Rezoned.row(key, keys[i], entry, fp, ignore, current, seen) if rezone else None
            if cand is None:
                cand = _Rezoned.misread(key, keys[i], entry, current, seen)
            if cand is None and key == keys[i].content:
                cand = _reread_row(entry, current, seen) or _read_26_row(entry, current, seen)
            if cand is not None:
                rekeys.append((cand.identity, key))
                del current[cand.identity]
                old = replace(cand, identity=key)
                current[key] = old
                rezoned.add(key)
        if old is None:  # keyed by the texts as the release before read them
            cand = _keyed_before(key, keys[i], entry, current, seen)
            if cand is not None:
                rekeys.append((cand.identity, key))
                del current[cand.identity]
                old = replace(cand, identity=key)
                current[key] = old
        nl = links[key]
        # The mirror of GUID churn: a known entry that now reads as the newer row of its
        # link (absent from the body) does: it dropped its id with an edit, alerted as
        # new under its link, and the id came back (an update would repeat that alert).
        text_changed = old is not None and _text_changed(old, entry, fp, ignore)
        if nl is not None and (old is None or text_changed):
            if absent is None:
                absent = _Absent(current, seen, links.values())
            cand = absent.same_entry(nl, entry, fp, ignore, current, old)
            if cand is not None:
                rekeys.append((cand.identity, key))
                del current[cand.identity]
                first = cand.first_seen if old is None else min(cand.first_seen, old.first_seen)
                old = replace(cand, identity=key, first_seen=first)
                current[key] = old
                text_changed = False  # its text is the entry's
        if old is None and unlinked is not None:
            cand = unlinked.same_entry(key, keys[i], entry, fp, ignore, current, seen)
            if cand is not None:
                rekeys.append((cand.identity, key))
                del current[cand.identity]
                old = replace(cand, identity=key)
                current[key] = old
                text_changed = _text_changed(old, entry, fp, ignore)
        tk = text_keys.get(key)
        if old is None and tk and unknown_by_text[(tk, entry.published)] == 1:
            cand = absent_by_text.pop((tk, entry.published), None)
            if cand is not None and cand.identity in current:
                rekeys.append((cand.identity, key))
                del current[cand.identity]
                old = replace(cand, identity=key)
                current[key] = old
                text_changed = _text_changed(old, entry, fp, ignore)
        if old is None and undated is not None:
            cand = undated.same_entry(key, keys[i], entry, current)
            if cand is not None:
                rekeys.append((cand.identity, key))
                del current[cand.identity]
                old = replace(cand, identity=key)
                current[key] = old
                text_changed = _text_changed(old, entry, fp, ignore)
        if old is None and unseen is not None:
            cand = unseen.same_entry(key, keys[i], entry, current)
            if cand is not None:
                rekeys.append((cand.identity, key))
                del current[cand.identity]
                old = replace(cand, identity=key)
                current[key] = old
                text_changed = _text_changed(old, entry, fp, ignore)
        if old is None and redated is not None:
            cand = redated.same_entry(key, keys[i], entry, fp, ignore, current)
            if cand is not None:  # decided once the rest is compared
                pending.append((i, key, entry, fp, cand))
                continue
        if old is None:
            new_items.append((key, entry, fp))
            continue
        if key in collided:
            chosen.append(old)
        ts_moved = old.published != entry.published or old.updated != entry.updated
        known.append((i, key, entry, fp, old, ts_moved, text_changed))

    # Re-dated entries are their rows where timestamp churn covers the body with them (so
    # they are stored silently); else each is new, as its key says (``_Redated``).
    if pending:
        # (a row another rule took since is no answer)
        live = [p for p in pending if current.get(p[4].identity) is p[4]]
        take = (
            not settled_seen
            and len(known) + len(live) >= CHURN_MIN
            and all(ts for *_, ts, _ in known)
        )
        # else, in a body too small for churn, each stamped with this poll's time as its
        # row was with the last poll's (``_Redated.stamped``)
        small = len(known) + len(live) + settled_seen < CHURN_MIN
        for i, key, entry, fp, cand in pending:
            if current.get(cand.identity) is cand and (
                take or (small and _Redated.stamped(cand, entry, now, previous))
            ):
                if not take:
                    restamped.add(key)
                rekeys.append((cand.identity, key))
                del current[cand.identity]
                old = replace(cand, identity=key)
                current[key] = old
                text_changed = _text_changed(old, entry, fp, ignore)
                known.append((i, key, entry, fp, old, True, text_changed))
            else:
                new_items.append((key, entry, fp))
        at = {key: i for key, i, _ in body}
        known.sort(key=lambda k: k[0])
        new_items.sort(key=lambda n: at[n[0]])

    # (a settled entry is known and kept its times: no churn)
    churn = not settled_seen and len(known) >= CHURN_MIN and all(ts for *_, ts, _ in known)
    body_known = len(known) + settled_seen  # the stamp rule is for feeds churn cannot cover

    changes: list[Change] = []
    upserts: list[StoredEntry] = []
    stamped: list[str] = []
    updated_count = 0
    silent = 0
    for i, key, entry, fp, old, ts_moved, text_changed in known:
        link_moved = old.link != entry.link and normalize_link(old.link) != links[key]
        # (an id that came or changed is stored too, silently: a later policy switch
        # re-keys an entry absent from that body by the fields its row has)
        id_moved = old.entry_id != entry.entry_id
        if not (ts_moved or text_changed or link_moved or id_moved or old.fingerprint != fp):
            touched.append((i, key))
            continue
        upserts.append(_row(feed, key, entry, fp, now, old))
        noise = (
            churn or key in rezoned or (ts_moved and (_reread(old, entry) or _read_26(old, entry)))
        )
        if (
            ts_moved
            and body_known < CHURN_MIN
            and (key in restamped or stamped_at_fetch(old, entry, now))
        ):
            stamped.append(key)
            noise = True
        counts_ts = ts_moved and not noise
        if settings.updates == "content":
            is_update = text_changed
        elif settings.updates == "timestamp":
            is_update = counts_ts or (noise and text_changed)
        else:
            is_update = text_changed or counts_ts
        if is_update and stale_copy(feed, key, old, entry, fp):
            is_update = False
        if not is_update:
            silent += 1
            continue
        updated_count += 1
        changes.append(
            Change(
                kind="updated",
                identity=key,
                entry=entry,
                fingerprint=fp,
                changes=_field_changes(old, entry, ignore),
                new_alert_id=old.new_alert_id,
            )
        )

    upserts += quieted
    new_changes: list[Change] = []
    for key, entry, fp in new_items:
        row = _row(feed, key, entry, fp, now, None)
        upserts.append(row)
        new_changes.append(
            Change(
                kind="new",
                identity=key,
                entry=entry,
                fingerprint=fp,
                changes={},
                new_alert_id=row.new_alert_id,
            )
        )

    fresh = {key for key, _, _ in new_items}  # (a repeated identity first met now)
    baseline = not baselined
    flood = 0
    if baseline:
        if settings.first_poll == "baseline":
            changes = []
            new_changes = []
    elif len(new_items) > settings.flood_limit and len(new_items) * 2 > body_size:
        flood = len(new_items)
        new_changes = []

    return DiffResult(
        changes=tuple(new_changes + changes),
        upserts=tuple(upserts),
        touched=tuple(key for _, key in sorted(touched)),
        rekeys=tuple(rekeys),
        identity=state,
        new=len(new_items),
        updated=updated_count,
        silent=silent,
        flood=flood,
        churn=churn,
        stamped=tuple(stamped),
        baseline=baseline,
        duplicates=len(dropped),
        dropped=tuple(dropped),
        kept=tuple(chosen),
        identities=tuple(own),
        repeated_new=sum(1 for i in dropped if own[i] in fresh),
        quiet=len(quieted),
    )
