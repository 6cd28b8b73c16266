"""`feedwatch preview URL [--keywords W,...]`: one feed, looked at the way feedwatch sees it.

Fetches the URL with feedwatch's own Fetcher and parser (same limits, same
redirect rules), prints the feed's title and entries (newest first) with the
keywords that hit and where, and the diagnostics a person needs when a feed
misbehaves: HTTP status, redirects, content type, validators and whether a
conditional re-request really gets a 304, parser warnings, entries without ids.
For an HTML page it lists the feeds the page advertises. No config, no state.

Exit status: 0 a feed was read; 1 the fetch failed, the body is not a feed, or a
validator given with --header was answered 304 (no body); 2 a bad argument (URL,
keyword, header).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, TextIO

from feedwatch import DEFAULT_USER_AGENT
from feedwatch.config import (
    HEADER_NAME,
    HEADER_VALUE_BAD,
    _http_url,
    parse_duration_arg,
    parse_size,
)
from feedwatch.discover import FEED_TYPES, FeedLink, discover_feeds, looks_like_html
from feedwatch.identity import (
    detect_policy,
    entry_keys,
    key_for,
    normalize_link,
    told_apart,
)
from feedwatch.model import (
    Config,
    EntrySnapshot,
    Fetched,
    FetchFailed,
    FetchOutcome,
    FetchRequest,
    NotModified,
    ParsedFeed,
    Rule,
)
from feedwatch.redact import MASK, redact_refused_url, redact_url
from feedwatch.text import escaped

if TYPE_CHECKING:
    from feedwatch.ignore_text import Ignore
    from feedwatch.match import CompiledRule

# The fetcher, parser and matcher (httpx, feedparser, regex) are imported when the
# command runs: the cli builds every command's parser on each start.

__all__ = ["FeedLink", "discover_feeds", "split_keywords"]


def show(text: object) -> str:
    """Feed text made safe for a terminal: a control character (an escape sequence's
    ESC) or a bidi override written as ``\\x1b``, ``\\u202e`` (``text.escaped``)."""
    return escaped(str(text))


# --------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------


_QUOTED = re.compile(r'"((?:[^"]|"")*)"\s*', re.S)


def split_keywords(values: Sequence[str]) -> list[str]:
    """``--keywords a,b --keywords c`` -> [a, b, c], each value split at its commas.

    A ``/regex/`` may contain commas: a piece that starts with ``/`` takes the pieces
    after it up to the first that ends with ``/`` when that makes a term that starts
    and ends with ``/`` (a regex, as in the config); else it is a plain term alone.
    A term in double quotes is taken as written, commas included, ``""`` standing for
    one quote (``"Washington, D.C.",Dnipro``). ValueError: a quote left open, or text
    after a closing quote."""
    from feedwatch.match import is_regex_term

    terms: list[str] = []
    for value in values:
        pieces = value.split(",")
        i = 0
        while i < len(pieces):
            term = pieces[i].strip()
            i += 1
            if term.startswith('"'):
                text = pieces[i - 1].lstrip()
                while not (m := _QUOTED.fullmatch(text)) and i < len(pieces):
                    text += "," + pieces[i]
                    i += 1
                if m is None:
                    raise ValueError(
                        f"{text.strip()!r}: a term in double quotes needs its closing double"
                        ' quote, and nothing after it but a comma (a quote in it is written "")'
                    )
                term = m[1].replace('""', '"')
            elif term.startswith("/") and not is_regex_term(term):
                for j in range(i, len(pieces)):
                    if pieces[j].rstrip().endswith("/"):
                        term = ",".join(pieces[i - 1 : j + 1]).strip()
                        i = j + 1
                        break
            if term.strip():
                terms.append(term)
    return list(dict.fromkeys(terms))


def term_shown(term: str) -> str:
    """``term`` as ``--keywords`` takes it: in double quotes where it holds a comma
    (a regex aside) or starts with a quote."""
    from feedwatch.match import is_regex_term

    if is_regex_term(term) or not ("," in term or term.startswith('"')):
        return term
    return '"' + term.replace('"', '""') + '"'


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Fetch one feed (no config, no state): its entries newest first, which keywords "
        "hit where, and HTTP/parser diagnostics. For an HTML page, the feeds it advertises."
    )
    parser.add_argument("url", metavar="URL", help="the feed (or a web page) to look at")
    parser.add_argument(
        "--keywords",
        "-k",
        action="append",
        default=[],
        metavar="W,...",
        help="terms to try, comma-separated, as in a rule's any (e.g. 'hypersonic,missile*');"
        " repeatable. A /regex/ may hold commas; a term with a comma goes in double quotes"
        """ ('"Washington, D.C.",Dnipro')""",
    )
    parser.add_argument(
        "--ignore-text",
        action="append",
        default=[],
        metavar="T,...",
        help="ignore_text terms to try, comma-separated as --keywords: each entry's text"
        " they would cut (e.g. '/Points: \\d+/')",
    )
    parser.add_argument(
        "--limit", type=int, default=25, metavar="N", help="entries to list (default 25)"
    )
    parser.add_argument("--timeout", default="30s", help='whole-request timeout (default "30s")')
    parser.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="an extra request header (repeatable), e.g. for a feed behind auth",
    )
    parser.add_argument(
        "--allow-private",
        action="store_true",
        help="follow a redirect to a private/loopback address (like allow_private = true)",
    )


# --------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------


def _usage(message: str) -> int:
    print(f"feedwatch preview: {message}", file=sys.stderr)
    return 2


def _header_shown(header: str) -> str:
    """A malformed ``--header`` as a usage error quotes it: its first word if that
    could be a header's name, never the rest ('Authorization Bearer <token>')."""
    first = re.match(r"\s*([^\s:=]+)[\s:=]", header)
    if first and HEADER_NAME.fullmatch(first[1]) and len(first[1]) <= 64:
        return f"{first[1]} {MASK}"
    return MASK


def _checked(
    values: Sequence[str], flag: str, check: Callable[[str], None]
) -> tuple[list[str], str | None]:
    """A repeatable option's comma-separated terms, each checked as the config checks
    it; and the first problem, if any."""
    try:
        terms = split_keywords(values)
    except ValueError as exc:
        return [], f"{flag}: {exc}"
    for t in terms:
        try:
            check(t)
        except ValueError as exc:
            return terms, f"{flag}: {exc}"
    return terms, None


def run(args: argparse.Namespace, out: TextIO, load: Callable[[], Config]) -> int:
    from feedwatch.ignore_text import compile_ignore
    from feedwatch.ignore_text import validate as validate_ignore
    from feedwatch.match import compile_rule, validate_term

    try:
        url = _http_url(args.url)
    except ValueError as exc:
        return _usage(f"{show(redact_refused_url(args.url))!r}: {exc}")
    try:
        timeout = parse_duration_arg(args.timeout)
        if timeout <= 0:
            raise ValueError("must be greater than 0")
    except ValueError as exc:
        return _usage(f"--timeout: {exc}")
    if args.limit < 0:
        return _usage("--limit must be 0 or more")
    headers: list[tuple[str, str]] = []
    for h in args.header:
        name, sep, value = h.partition(":")
        if not sep or not HEADER_NAME.fullmatch(name.strip()):
            return _usage(f"--header {show(_header_shown(h))!r}: write it as 'Name: value'")
        if HEADER_VALUE_BAD.search(value.strip()):
            return _usage(f"--header {name.strip()!r}: its value must be printable ASCII")
        headers.append((name.strip(), value.strip()))
    terms, problem = _checked(args.keywords, "--keywords", validate_term)
    ignored, ignore_problem = _checked(args.ignore_text, "--ignore-text", validate_ignore)
    if problem or ignore_problem:
        return _usage(problem or ignore_problem or "")
    rule = compile_rule(Rule(name="keywords", any=tuple(terms))) if terms else None
    ignore = compile_ignore(tuple(ignored))
    req = FetchRequest(
        url=url,
        timeout=timeout,
        max_body=parse_size("10MiB"),
        user_agent=DEFAULT_USER_AGENT,
        headers=tuple(headers),
        allow_private=args.allow_private,
    )
    first, second = asyncio.run(_fetch_twice(req))
    return _report(out, url, first, second, terms, rule, args.limit, ignore)


async def _fetch_twice(req: FetchRequest) -> tuple[FetchOutcome, FetchOutcome | None]:
    from feedwatch.fetch import Fetcher

    async with Fetcher(concurrency=1, per_host=1) as fetcher:
        first = await fetcher.fetch(req)
        second = None
        if isinstance(first, Fetched) and (first.etag or first.last_modified):
            cond = FetchRequest(
                url=req.url,
                timeout=req.timeout,
                max_body=req.max_body,
                user_agent=req.user_agent,
                headers=req.headers,
                etag=first.etag,
                last_modified=first.last_modified,
                allow_private=req.allow_private,
            )
            second = await fetcher.fetch(cond)
        return first, second


def _size(n: int) -> str:
    if n >= 1024 * 1024:
        return f"{n / 1024 / 1024:.1f} MiB"
    if n >= 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n} bytes"


def _when(e: EntrySnapshot) -> datetime | None:
    times = [t for t in (e.updated, e.published) if t is not None]
    return max(times) if times else None


def _date(e: EntrySnapshot) -> str:
    when = _when(e)
    if when is None:
        return "(no date)".ljust(16)
    return when.strftime("%Y-%m-%d %H:%M")


def newest_first(entries: Sequence[EntrySnapshot]) -> list[EntrySnapshot]:
    """Dated entries newest first, then undated ones in document order."""
    dated = [(when, e) for e in entries if (when := _when(e)) is not None]
    undated = [e for e in entries if _when(e) is None]
    dated.sort(key=lambda pair: pair[0], reverse=True)
    return [e for _, e in dated] + undated


def _conditional(first: Fetched, second: FetchOutcome | None) -> str:
    if second is None:
        return (
            "not possible: no ETag or Last-Modified, so every poll downloads the whole body "
            "(feedwatch still skips parsing a byte-identical one)"
        )
    if isinstance(second, NotModified):
        return "304 Not Modified: the server honours it (an unchanged feed costs one small request)"
    if isinstance(second, Fetched):
        same = "the same body" if second.body == first.body else "a different body"
        return (
            f"{second.status} with {same}: the server ignores If-None-Match/If-Modified-Since "
            "(feedwatch still skips parsing a byte-identical body)"
        )
    return f"the second request failed: {second.reason}"


def _report(
    out: TextIO,
    url: str,
    first: FetchOutcome,
    second: FetchOutcome | None,
    terms: list[str],
    rule: CompiledRule | None,
    limit: int,
    ignore: Ignore | None = None,
) -> int:
    w = out.write
    w(f"URL:           {show(redact_url(url))}\n")
    if isinstance(first, FetchFailed):
        status = (
            f" (HTTP {first.status})"
            if first.status and not first.reason.startswith("HTTP")
            else ""
        )
        w(f"Fetch failed:  {show(first.reason)}{status}\n")
        if first.permanent_redirect:
            w(
                f"               after a permanent redirect to {show(redact_url(first.permanent_redirect))}\n"
            )
        out.flush()
        return 1
    if isinstance(first, NotModified):  # a --header sent the validator: no body came
        w(
            f"HTTP:          304 Not Modified in {first.elapsed:.2f}s: the feed has not changed"
            " since the If-None-Match/If-Modified-Since of --header\n"
            "               drop that --header to see the feed\n"
        )
        out.flush()
        return 1
    ctype = first.headers.get("content-type", "")
    w(
        f"HTTP:          {first.status} in {first.elapsed:.2f}s, "
        f"{show(ctype) or 'no Content-Type'}, {_size(len(first.body))}"
        + (
            f" ({show(first.headers['content-encoding'])})"
            if "content-encoding" in first.headers
            else ""
        )
        + "\n"
    )
    if first.redirects:
        for hop in first.redirects:
            w(f"Redirected:    -> {show(redact_url(hop))}\n")
        if first.permanent_redirect:
            w(
                "               permanent (301/308): set the feed's url to "
                f"{show(redact_url(first.permanent_redirect))}\n"
            )
        else:
            w("               temporary: keep the url you have\n")
    w(f"ETag:          {show(first.etag) if first.etag else '(none)'}\n")
    w(f"Last-Modified: {show(first.last_modified) if first.last_modified else '(none)'}\n")
    w(f"Conditional:   {_conditional(first, second)}\n")

    from feedwatch.match import POLL_REGEX_BUDGET, REGEX_TIMEOUT, RegexBudget, explain
    from feedwatch.parse import parse_body

    parsed: ParsedFeed = parse_body(first.body, first.headers, url=first.url)
    if not parsed.is_feed and not parsed.entries:
        return _not_a_feed(out, first, parsed)

    for warning in parsed.warnings:
        w(f"Warning:       {show(warning)}\n")
    if not parsed.warnings:
        w("Warnings:      none\n")
    entries = parsed.entries
    no_id = sum(1 for e in entries if not (e.entry_id and e.entry_id.strip()))
    ids = [e.entry_id.strip() for e in entries if e.entry_id and e.entry_id.strip()]
    dup_ids = len(ids) - len(set(ids))
    links = [normalize_link(e.link) for e in entries if e.link]
    dup_links = len(links) - len(set(links))
    policy = detect_policy(entries)
    notes = []
    if no_id:
        notes.append(f"{no_id} without an id")
    if dup_ids:
        notes.append(f"{dup_ids} repeated ids")
    if dup_links:
        notes.append(f"{dup_links} repeated links")
    no_date = sum(1 for e in entries if _when(e) is None)
    if no_date:
        notes.append(f"{no_date} without a date")
    w(f"Entries:       {len(entries)}" + (f" ({', '.join(notes)})" if notes else "") + "\n")
    if policy is not None:
        why = {
            "guid": "the feed's ids",
            "link": "links (too few distinct ids)",
            "content": "title+link+date hashes, and the text of an entry without a date"
            " (too few distinct ids and links)",
        }[policy]
        w(f'Identity:      id_policy = "auto" would key entries on {why}\n')
        keys = told_apart([entry_keys(e) for e in entries], policy)
        repeated = len(entries) - len({key_for(k, policy) for k in keys})
        if repeated:
            w(
                f"               {repeated} {'entry has' if repeated == 1 else 'entries have'}"
                " the identity of an earlier one: only the first of each is compared\n"
            )
    w("\n")
    title = parsed.title or "(untitled)"
    w(f"{show(title)}" + (f"  <{show(parsed.link)}>" if parsed.link else "") + "\n\n")

    hits_total = 0
    cut_total = 0
    slow_total = 0  # entries on which a regex term ran out of time
    # the regex time of one poll, for all the entries: a slow regex costs about a second
    budget = RegexBudget(redact_url(url))
    ordered = newest_first(entries)
    for i, e in enumerate(ordered):
        cut = ignore.found(e.title, e.summary, e.content) if ignore is not None else []
        cut_total += bool(cut)
        hit_terms = []
        if rule is not None:
            exp = explain(rule, e, budget)
            hit_terms = [t for t in exp.terms if t.hit]
            if hit_terms:
                hits_total += 1
            slow_total += any(t.timed_out for t in exp.terms)
        if i >= limit:
            continue
        mark = "*" if hit_terms else " "
        w(f"{mark} {_date(e)}  {show(e.title) or '(no title)'}\n")
        if e.link:
            w(f"  {'':16}  {show(e.link)}\n")
        if hit_terms:
            shown = ", ".join(f"{term_shown(t.term)} ({', '.join(t.fields)})" for t in hit_terms)
            w(f"  {'':16}  hits: {show(shown)}\n")
        if cut:
            w(f"  {'':16}  ignored: {show(', '.join(repr(c) for c in cut))}\n")
    if len(ordered) > limit:
        w(f"  ... and {len(ordered) - limit} more (--limit N)\n")
    if terms:
        slow = (
            f"; a regex ran out of time on {slow_total} of them (a miss there:"
            f" {REGEX_TIMEOUT:g} s a field, {POLL_REGEX_BUDGET:g} s in all, as in a poll)"
            if slow_total
            else ""
        )
        w(
            f"\nKeywords:      {show(', '.join(map(term_shown, terms)))}: {hits_total} of {len(entries)} "
            f"entries hit (marked *){slow}\n"
        )
    if ignore is not None:
        w(
            f"Ignore text:   {show(', '.join(map(term_shown, ignore.terms)))}: cuts text from {cut_total} of"
            f" {len(entries)} entries (a change only there would not be an update)\n"
        )
    out.flush()
    return 0


def _not_a_feed(out: TextIO, fetched: Fetched, parsed: ParsedFeed) -> int:
    w = out.write
    ctype = fetched.headers.get("content-type", "")
    why = "; ".join(parsed.warnings) or "no RSS, Atom or JSON Feed found"
    if looks_like_html(fetched.body, ctype):
        found = discover_feeds(fetched.body, fetched.url, ctype)
        w("Not a feed:    an HTML page")
        if not found:
            w(
                ' that advertises no feed (no <link rel="alternate" type="application/rss+xml"...>)\n'
            )
        else:
            w(f"; it advertises {len(found)} feed{'s' if len(found) != 1 else ''}:\n")
            for f in found:
                label = f"{show(f.title)} " if f.title else ""
                w(f"  {label}({FEED_TYPES.get(f.type, f.type)}): {show(redact_url(f.url))}\n")
            w(f"Try:           feedwatch preview {show(redact_url(found[0].url))}\n")
    else:
        w(f"Not a feed:    {show(why)}\n")
    out.flush()
    return 1
