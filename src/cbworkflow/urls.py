"""The syntax of the URLs the worker calls: one check, used by validation (on save) and the outbound client (on call).

A template that validates must not fail at run time on its URL, and the other way round: so both ask
`check_url`, and a URL is either called or refused with the same reason in both places. Only the syntax is judged
here; which addresses may be reached (the SSRF guard) depends on DNS and on `CBW_OUTBOUND_ALLOW_PRIVATE`, and is
decided at call time by `outbound.guard`.

What is called: `http` or `https`; a host that is a DNS name (ASCII or IDNA, labels of letters, digits, `-` and
`_`, each 1-63 characters, 253 in all, an optional final dot) or an IPv6 literal in brackets without a zone id;
numeric IPv4 forms are names to the OS resolver (`127.1` means 127.0.0.1) and are judged by the guard; a port of
1-65535; optional `user:password` credentials in RFC 3986 userinfo characters (sent as Basic auth, never shown);
no spaces, control characters or backslashes anywhere. Anything else is refused, since two parsers reading it
differently (ours, httpx's, a proxy's) is how requests end up somewhere the check did not look.

Templates also need to know which part of a URL a placeholder is in (`split_template`): placeholders may fill the
path, query and fragment, never the scheme or authority.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

__all__ = [
    "DEFAULT_PORTS",
    "CheckedUrl",
    "UrlError",
    "UrlSchemeError",
    "check_url",
    "host_from_placeholder",
    "split_template",
]

DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_USERINFO = re.compile(r"(?:[A-Za-z0-9._~!$&'()*+,;=:-]|%[0-9A-Fa-f]{2})*")
_PORT = re.compile(r"[0-9]{1,5}")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_BRACKETED = re.compile(r"\[([^\[\]]*)\](?::([^:]*))?")


class UrlError(ValueError):
    """A URL that is never called. `reason` is a phrase for the person who wrote it (e.g. "port 0 ...")."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UrlSchemeError(UrlError):
    """Not an http or https URL: the outbound client reports it as a refused destination, not a malformed one."""


@dataclass(frozen=True)
class CheckedUrl:
    """A URL that passed `check_url`, in the parts a client connects with."""

    scheme: str  # "http" or "https"
    host: str  # ASCII (IDNA), lower case; an IPv6 address compressed, without brackets
    port: int
    explicit_port: bool
    userinfo: str  # "user:pass" as written (percent-encoded), or ""
    path_query: str  # "/path?query", never empty; the fragment is not sent


def check_url(url: str) -> CheckedUrl:
    """`url` in parts, or UrlError saying why it is never called (UrlSchemeError for a scheme other than http(s))."""
    if any(ord(c) <= 0x20 or 0x7F <= ord(c) <= 0x9F or c.isspace() for c in url):
        raise UrlError("it contains spaces or control characters")
    if "\\" in url:  # a path separator to browsers, part of the authority to urlsplit: refuse the ambiguity
        raise UrlError("it contains a backslash")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise UrlError(str(exc)) from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise UrlSchemeError(f"only http and https URLs are called, not {scheme or 'a relative URL'!r}")
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if at and not _USERINFO.fullmatch(userinfo):
        raise UrlError("its credentials (before the @) hold characters that must be percent-encoded")
    host, port_text = _host_and_port(hostport)
    port = _port(port_text)
    path_query = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return CheckedUrl(scheme, host, port or DEFAULT_PORTS[scheme], port is not None, userinfo, path_query)


def _host_and_port(hostport: str) -> tuple[str, str]:
    """The host (checked and normalised) and the port as written ("" when absent)."""
    if hostport.startswith("["):
        bracketed = _BRACKETED.fullmatch(hostport)
        if bracketed is None:
            raise UrlError(f"{hostport!r} is not [IPv6 address] optionally followed by :port")
        return _ipv6(bracketed[1]), bracketed[2] or ""
    host, _, port = hostport.rpartition(":") if ":" in hostport else (hostport, "", "")
    if not host:
        raise UrlError("it has no host")
    if "[" in host or "]" in host or ":" in host:
        raise UrlError(f"host {host!r} is not a valid name (an IPv6 address goes in brackets)")
    return _name(host), port


def _ipv6(text: str) -> str:
    if "%" in text:
        raise UrlError(f"host [{text}] has a zone id: only addresses without one are called")
    try:
        return ipaddress.IPv6Address(text).compressed
    except ValueError:
        raise UrlError(f"host [{text}] is not a valid IPv6 address") from None


def _name(host: str) -> str:
    name = host.lower()
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            raise UrlError(f"host {host!r} is not a valid name") from None
    labels = name[:-1].split(".") if name.endswith(".") else name.split(".")
    if len(name.rstrip(".")) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise UrlError(f"host {host!r} is not a valid name")
    return name


def _port(text: str) -> int | None:
    if not text:
        return None
    if not _PORT.fullmatch(text):
        raise UrlError(f"port {text!r} is not a number from 1 to 65535")
    port = int(text)
    if not 1 <= port <= 65535:
        raise UrlError(f"port {port} is out of range (1-65535)")
    return port


def split_template(url: str) -> tuple[str, str, str | None, str | None]:
    """A URL template as (scheme and authority, path, query, fragment), the query and fragment None when absent.

    Split as `urlsplit` splits, on the template's own characters: placeholder values are percent-encoded when
    filled, so they can never add a `/`, `?` or `#` that moves a boundary. Without a scheme and `//`, the whole
    template is the first part: it has no path a placeholder could fill (and no host, so it is never called).
    """
    scheme = _SCHEME.match(url)
    if scheme is None or not url.startswith("//", scheme.end()):
        return url, "", None, None
    start = scheme.end() + 2
    ends = [i for i in (url.find(c, start) for c in "/?#") if i >= 0]
    authority_end = min(ends, default=len(url))
    rest, hash_, fragment = url[authority_end:].partition("#")
    path, question, query = rest.partition("?")
    return url[:authority_end], path, query if question else None, fragment if hash_ else None


def host_from_placeholder(url: str) -> bool:
    """Whether a URL's scheme or authority (host, port, credentials) would be filled in from data: then whoever can
    write the state (a volunteer recording an outcome) could send the call, its headers and the contact's data
    anywhere."""
    return "{" in split_template(url)[0]
