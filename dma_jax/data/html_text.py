"""Plain text from Sphinx HTML pages with the standard library's ``html.parser``.

Only the page's main body (``<div role="main">``) is kept; navigation, scripts, styles and the
"¶" header links are dropped. Block elements end a line, ``<pre>`` keeps its whitespace, and runs
of spaces elsewhere collapse to one.
"""

from __future__ import annotations

import html.parser
import re

_BLOCK_TAGS = frozenset(
    "p div section h1 h2 h3 h4 h5 h6 li dt dd pre br tr table blockquote ul ol dl figure caption".split()
)
_SKIP_TAGS = frozenset({"script", "style"})


class _MainBodyText(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._main_depth = 0      # > 0 while inside the main body div (its nesting depth)
        self._skip_depth = 0      # > 0 while inside script/style/headerlink
        self._pre_depth = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if self._main_depth == 0:
            if tag == "div" and attrs.get("role") == "main":
                self._main_depth = 1
            return
        if tag == "div":
            self._main_depth += 1
        if tag in _SKIP_TAGS or (tag == "a" and "headerlink" in (attrs.get("class") or "")):
            self._skip_depth += 1
        if tag == "pre":
            self._pre_depth += 1
        if tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if self._main_depth == 0:
            return
        if tag == "div":
            self._main_depth -= 1
        if self._skip_depth and (tag in _SKIP_TAGS or tag == "a"):
            self._skip_depth -= 1
        if tag == "pre" and self._pre_depth:
            self._pre_depth -= 1
        if tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data):
        if self._main_depth == 0 or self._skip_depth:
            return
        self.parts.append(data if self._pre_depth else re.sub(r"\s+", " ", data))


def html_to_text(page: str) -> str:
    """The main body text of one HTML page (``""`` when the page has no ``role="main"`` div)."""
    parser = _MainBodyText()
    parser.feed(page)
    parser.close()
    return "".join(parser.parts)
