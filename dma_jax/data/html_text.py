"""Plain text from generated HTML documentation pages with the standard library's ``html.parser``.

Only the page's main body is kept: by default Sphinx's ``<div role="main">``; other generators
pass their own ``main`` selector (``element("main")``, ``element("section", id="main-content")``).
Inside it, scripts, styles, the "¶" header links and whatever the ``drop`` selectors match
(navigation bars, sidebars, syntax-diagram images) are dropped. Block elements end a line,
``<pre>`` keeps its whitespace, and runs of spaces elsewhere collapse to one.
"""

from __future__ import annotations

import html.parser
import re
from collections.abc import Callable, Sequence

# Elements that end a line. The Sphinx set is what the Python documentation has always been
# extracted with; other generators use the wider set (table cells, HTML5 sectioning elements).
SPHINX_BLOCK_TAGS = frozenset(
    "p div section h1 h2 h3 h4 h5 h6 li dt dd pre br tr table blockquote ul ol dl figure caption".split()
)
BLOCK_TAGS = SPHINX_BLOCK_TAGS | frozenset("main article header footer nav aside details summary hr td th".split())
_VOID_TAGS = frozenset("area base br col embed hr img input link meta source track wbr".split())

# A selector is a predicate on one start tag: (tag name, {attribute: value}).
Selector = Callable[[str, dict], bool]


def element(tag: str | None = None, **attrs: str) -> Selector:
    """A selector for start tags named ``tag`` (any tag if None) whose attributes match ``attrs``.

    ``class_="x"`` asks that ``x`` be one of the element's classes; any other keyword asks that
    the attribute equal the value exactly (``id="main-content"``, ``role="main"``).
    """
    wanted_class = attrs.pop("class_", None)

    def matches(name: str, found: dict) -> bool:
        if tag is not None and name != tag:
            return False
        if wanted_class is not None and wanted_class not in (found.get("class") or "").split():
            return False
        return all(found.get(key) == value for key, value in attrs.items())

    return matches


SPHINX_MAIN = element("div", role="main")
ALWAYS_DROPPED = (element("script"), element("style"), element("a", class_="headerlink"))


class _MainBodyText(html.parser.HTMLParser):
    def __init__(self, main: Selector, drop: Sequence[Selector], blocks: frozenset[str]):
        super().__init__(convert_charrefs=True)
        self._blocks = blocks
        self.parts: list[str] = []
        self._main = main
        self._drop = tuple(ALWAYS_DROPPED) + tuple(drop)
        self._main_tag, self._main_depth = None, 0    # depth > 0 while inside the main element
        self._skip_tag, self._skip_depth = None, 0    # depth > 0 while inside a dropped element
        self._pre_depth = 0

    def handle_starttag(self, tag, attrs):
        if tag in _VOID_TAGS:                      # <br>, <img>: never open a region
            self._void(tag)
            return
        attrs = dict(attrs)
        if self._main_depth == 0:
            if self._main(tag, attrs):
                self._main_tag, self._main_depth = tag, 1
            return
        if tag == self._main_tag:
            self._main_depth += 1
        if self._skip_depth:
            if tag == self._skip_tag:
                self._skip_depth += 1
            return
        if any(selector(tag, attrs) for selector in self._drop):
            self._skip_tag, self._skip_depth = tag, 1
            return
        if tag == "pre":
            self._pre_depth += 1
        if tag in self._blocks:
            self.parts.append("\n")

    def _void(self, tag):
        if self._main_depth and not self._skip_depth and tag in self._blocks:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in _VOID_TAGS:                      # "<br/>" arrives as start and end tag
            self._void(tag)
            return
        if self._main_depth == 0:
            return
        if tag == self._main_tag:
            self._main_depth -= 1
        if self._skip_depth:
            if tag == self._skip_tag:
                self._skip_depth -= 1
            return
        if tag == "pre" and self._pre_depth:
            self._pre_depth -= 1
        if tag in self._blocks:
            self.parts.append("\n")

    def handle_data(self, data):
        if self._main_depth == 0 or self._skip_depth:
            return
        self.parts.append(data if self._pre_depth else re.sub(r"\s+", " ", data))


def html_to_text(page: str, main: Selector = SPHINX_MAIN, drop: Sequence[Selector] = (),
                 blocks: frozenset[str] = SPHINX_BLOCK_TAGS) -> str:
    """The text of one HTML page's ``main`` element(s), less the elements that ``drop`` selects;
    ``""`` when no element matches ``main``. Elements named in ``blocks`` end a line."""
    parser = _MainBodyText(main, drop, blocks)
    parser.feed(page)
    parser.close()
    return "".join(parser.parts)
