"""Where the parts of a URL template are: placeholders may fill the path, query and fragment, never the scheme
or the authority (host, port, credentials).
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["host_from_placeholder", "split_template"]

_SCHEME: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")


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
