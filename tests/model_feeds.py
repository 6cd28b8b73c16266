"""Feed bodies (RSS, Atom, JSON Feed) from abstract entries, for tests/test_model_props.py."""

from __future__ import annotations

from datetime import datetime, timezone
from email.utils import format_datetime
from xml.sax.saxutils import escape, quoteattr

PUB = [
    None,
    datetime(2020, 1, 1, 10, 0, 0, tzinfo=timezone.utc),
    datetime(2020, 1, 2, 11, 30, 0, tzinfo=timezone.utc),
]
UPD = [
    None,
    datetime(2020, 3, 1, 8, 0, 0, tzinfo=timezone.utc),
    datetime(2020, 3, 2, 9, 15, 0, tzinfo=timezone.utc),
]
SUMMARY = ["Summary one of {k}.", "Summary two of {k}, edited."]
CONTENT = ["", "Body text of {k}."]
TITLE = ["Entry {k}", "Entry {k} (corrected)"]


def fields(e):
    k, gid, t, s, c, p, u, noise = e[:8]
    extra = tuple(e[8:]) + (0, 0, 0)[len(e[8:]) :]
    author, cat, lv = extra[:3]
    return dict(
        guid=f"urn:e:{k}" if gid else None,
        title=TITLE[t].format(k=k),
        link=[
            f"https://example.org/post/{k}",
            f"https://example.org/post/{k}?utm_source=rss",
            None,
        ][lv],
        summary=SUMMARY[s].format(k=k),
        content=CONTENT[c].format(k=k),
        published=PUB[p],
        updated=UPD[u],
        noise=noise,
        author=["", "Alice", "Bob"][author],
        tags=[[], ["world"], ["world", "europe"]][cat],
    )


def _summary_html(f):
    if f["noise"]:
        return f'<p>  {escape(f["summary"])}\n </p><img src="https://t.example/px.gif?x=1" width="1" height="1"/>'
    return escape(f["summary"])


def render_rss(entries, title="Feed", head=(0, 0, 0), sep="\n"):
    title = ["Feed", "Feed renamed"][head[0]]
    fa = ["", "Carol", "Dave"][head[1]]
    build = [
        "",
        "<lastBuildDate>Mon, 01 Jan 2024 00:00:00 GMT</lastBuildDate>",
        "<lastBuildDate>Tue, 02 Jan 2024 00:00:00 GMT</lastBuildDate>",
    ][head[2]]
    items = []
    for e in entries:
        f = fields(e)
        parts = ["<item>"]
        if f["guid"]:
            parts.append(f'<guid isPermaLink="false">{escape(f["guid"])}</guid>')
        parts.append(f"<title>{escape(f['title'])}</title>")
        if f["link"]:
            parts.append(f"<link>{escape(f['link'])}</link>")
        if f["published"]:
            parts.append(f"<pubDate>{format_datetime(f['published'], usegmt=True)}</pubDate>")
        if f["updated"]:
            parts.append(
                f"<atom:updated>{f['updated'].strftime('%Y-%m-%dT%H:%M:%SZ')}</atom:updated>"
            )
        if f["author"]:
            parts.append(f"<dc:creator>{escape(f['author'])}</dc:creator>")
        for t in f["tags"]:
            parts.append(f"<category>{escape(t)}</category>")
        parts.append(f"<description>{escape(_summary_html(f))}</description>")
        if f["content"]:
            parts.append(f"<content:encoded><![CDATA[<p>{f['content']}</p>]]></content:encoded>")
        parts.append("</item>")
        items.append("\n".join(parts))
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0" xmlns:atom="http://www.w3.org/2005/Atom"'
        ' xmlns:content="http://purl.org/rss/1.0/modules/content/" xmlns:dc="http://purl.org/dc/elements/1.1/"><channel>\n'
        f"<title>{escape(title)}</title><link>https://example.org/</link><description>d</description>\n"
        + (f"<managingEditor>{fa}</managingEditor>" if fa else "")
        + build
        + sep.join(items)
        + "\n</channel></rss>\n"
    ).encode()


def render_atom(entries, title="Feed", head=(0, 0, 0), sep="\n"):
    title = ["Feed", "Feed renamed"][head[0]]
    fa = ["", "Carol", "Dave"][head[1]]
    build = ["2020-01-01T00:00:00Z", "2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z"][head[2]]
    out = []
    for e in entries:
        f = fields(e)
        parts = ["<entry>"]
        if f["guid"]:
            parts.append(f"<id>{escape(f['guid'])}</id>")
        parts.append(f"<title>{escape(f['title'])}</title>")
        if f["link"]:
            parts.append(f"<link href={quoteattr(f['link'])}/>")
        if f["published"]:
            parts.append(f"<published>{f['published'].strftime('%Y-%m-%dT%H:%M:%SZ')}</published>")
        if f["updated"]:
            parts.append(f"<updated>{f['updated'].strftime('%Y-%m-%dT%H:%M:%SZ')}</updated>")
        if f["author"]:
            parts.append(f"<author><name>{escape(f['author'])}</name></author>")
        for t in f["tags"]:
            parts.append(f"<category term={quoteattr(t)}/>")
        parts.append(f'<summary type="html">{escape(_summary_html(f))}</summary>')
        if f["content"]:
            parts.append(f'<content type="html">{escape("<p>" + f["content"] + "</p>")}</content>')
        parts.append("</entry>")
        out.append("\n".join(parts))
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<feed xmlns="http://www.w3.org/2005/Atom">\n'
        f"<title>{escape(title)}</title><id>urn:feed</id><updated>{build}</updated>\n"
        + (f"<author><name>{fa}</name></author>" if fa else "")
        + sep.join(out)
        + "\n</feed>\n"
    ).encode()


RENDER = {"rss": render_rss, "atom": render_atom}
CTYPE = {"rss": "application/rss+xml", "atom": "application/atom+xml"}


def render_json(entries, title="Feed", head=(0, 0, 0), sep="\n"):
    import json as _json

    title = ["Feed", "Feed renamed"][head[0]]
    fa = ["", "Carol", "Dave"][head[1]]
    items = []
    for e in entries:
        f = fields(e)
        item = {"title": f["title"], "summary": f["summary"]}
        if f["guid"]:
            item["id"] = f["guid"]
        if f["link"]:
            item["url"] = f["link"]
        if f["published"]:
            item["date_published"] = f["published"].strftime("%Y-%m-%dT%H:%M:%SZ")
        if f["updated"]:
            item["date_modified"] = f["updated"].strftime("%Y-%m-%dT%H:%M:%SZ")
        if f["content"]:
            item["content_html"] = "<p>" + f["content"] + "</p>" + (" \n" if f["noise"] else "")
        else:
            item["content_text"] = ""
        if f["author"]:
            item["authors"] = [{"name": f["author"]}]
        if f["tags"]:
            item["tags"] = f["tags"]
        items.append(item)
    doc = {"version": "https://jsonfeed.org/version/1.1", "title": title, "items": items}
    if fa:
        doc["authors"] = [{"name": fa}]
    return _json.dumps(doc, indent=1 if sep else None).encode()


RENDER["json"] = render_json
CTYPE["json"] = "application/feed+json"
