"""The proxy the environment names (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, NO_PROXY).

httpx honours these for feeds (feedwatch.fetch) and webhooks (feedwatch.sinks.webhook),
read as the standard library's ``urllib.request.getproxies`` reads them (the
lower-case name first). It takes them as it finds them: one it cannot use (an unknown
scheme, SOCKS without the socksio package) failed every request with a traceback.
``problem`` names the variable and the fix once, at the start, as a config error.
"""

from __future__ import annotations

import importlib.util
import os
import urllib.request

import httpx

from feedwatch.config import ConfigError, Problem
from feedwatch.redact import redact_url

SCHEMES = ("http", "https", "all")  # the variables httpx mounts a proxy for: <scheme>_proxy
PROXY_SCHEMES = ("http", "https", "socks5", "socks5h")


def proxies() -> list[tuple[str, str]]:
    """(variable name as set, proxy URL) of each proxy httpx would use, the URL as httpx
    completes it (``host:port`` is ``http://host:port``)."""
    found = urllib.request.getproxies()
    out = []
    for scheme in SCHEMES:
        value = found.get(scheme)
        if not value:
            continue
        name = f"{scheme}_proxy"
        if not os.environ.get(name):
            name = name.upper()
        out.append((name, value if "://" in value else f"http://{value}"))
    return out


class Routes:
    """Which proxy httpx takes for a URL, as its client mounts them from the environment
    (``NO_PROXY`` included): to name that proxy when the failure is its own."""

    def __init__(self) -> None:
        from httpx._utils import URLPattern, get_environment_proxies

        # "https://" -> HTTPS_PROXY (or https_proxy, as set): httpx's mount patterns
        names = {f"{name[: -len('_proxy')].lower()}://": name for name, _ in proxies()}
        self._routes = sorted(
            (
                (URLPattern(pattern), proxy, names.get(pattern, "") if proxy else "")
                for pattern, proxy in get_environment_proxies().items()
            ),
            key=lambda route: route[0],  # as httpx tries them: the most specific first
        )

    def label(self, url: httpx.URL) -> str | None:
        """``proxy URL (VARIABLE)``, the URL's user-info masked, for the proxy that
        ``url`` goes through; None when it is reached directly."""
        for pattern, proxy, name in self._routes:
            if pattern.matches(url):
                if proxy is None:
                    return None
                return f"proxy {redact_url(proxy)} ({name})" if name else "proxy"
        return None


def configured() -> bool:
    return bool(proxies())


def problem() -> str | None:
    """Why the environment's proxy cannot be used, naming the variable; None when it can
    (or none is set)."""
    for name, url in proxies():
        scheme = url.partition("://")[0].lower()
        shown = f"{name}={redact_url(url)}"
        if scheme not in PROXY_SCHEMES:
            return (
                f"{shown}: a proxy URL starts with http://, https://, socks5:// or "
                f"socks5h://; fix it or unset {name}"
            )
        if scheme.startswith("socks") and importlib.util.find_spec("socksio") is None:
            return (
                f"{shown}: a SOCKS proxy needs the socksio package: pip install 'feedwatch[socks]'"
            )
    return None


def check() -> None:
    """Raise ConfigError when the environment's proxy cannot be used."""
    why = problem()
    if why is not None:
        raise ConfigError([Problem("", None, "", why)])
