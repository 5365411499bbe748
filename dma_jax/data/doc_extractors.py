"""Per-package page extractors for the documentation corpus (``dma_jax.data.corpus``).

Each extractor takes the folder a package's ``.deb`` was unpacked into and yields ``(path, raw
text)`` for each page, in sorted path order. They are built from a few general pieces:

* ``html_pages``: the main element of each HTML page under a folder (``html_text.html_to_text``
  with a per-generator ``main`` selector and ``drop`` list), pages picked by path patterns;
* ``pod_to_text``: Perl's POD markup to plain text (headings, paragraphs, lists, verbatim code);
* ``gzip_text_pages``: ``.gz``-compressed plain-text files (reStructuredText kept as it is).
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from dma_jax.data.html_text import BLOCK_TAGS, SPHINX_BLOCK_TAGS, SPHINX_MAIN, Selector, element, html_to_text

Pages = Iterator[tuple[str, str]]


def _one_folder(root: Path, pattern: str) -> Path:
    found = sorted(root.glob(pattern))
    if len(found) != 1:
        raise FileNotFoundError(f"expected one folder {pattern!r} under {root}, found {len(found)}")
    return found[0]


def html_pages(doc_root: Path, *, include: str = r".", exclude: str | None = None,
               main: Selector = SPHINX_MAIN, drop: Sequence[Selector] = (),
               blocks: frozenset[str] = BLOCK_TAGS) -> Pages:
    """(path relative to ``doc_root``, main text) of each ``*.html`` page under ``doc_root`` whose
    relative path matches ``include`` and not ``exclude`` (``re.match``, from the path's start)."""
    keep, skip = re.compile(include), re.compile(exclude) if exclude else None
    for path in sorted(doc_root.rglob("*.html")):
        rel = path.relative_to(doc_root).as_posix()
        if keep.match(rel) and not (skip and skip.match(rel)):
            yield rel, html_to_text(path.read_text(encoding="utf-8", errors="replace"), main, drop, blocks)


def gzip_text_pages(doc_root: Path, suffixes: tuple[str, ...]) -> Pages:
    """(path without ``.gz``, text) of each ``*.gz`` file under ``doc_root`` named ``*<suffix>.gz``."""
    for path in sorted(doc_root.rglob("*.gz")):
        rel = path.relative_to(doc_root).as_posix()[: -len(".gz")]
        if rel.endswith(suffixes):
            yield rel, gzip.decompress(path.read_bytes()).decode("utf-8", errors="replace")


# --- POD -----------------------------------------------------------------------------------------

# X<...> or X<< ... >> (any number of brackets, the same number closing, spaces inside).
_POD_CODE = re.compile(r"([A-Z])(?:(<{2,})\s(.*?)\s(?P<close>>{2,})|<([^<>]*)>)", re.S)
_POD_ESCAPES = {"lt": "<", "gt": ">", "verbar": "|", "sol": "/", "quot": '"', "amp": "&", "apos": "'",
                "nbsp": "\u00a0", "copy": "\u00a9", "eacute": "\u00e9", "auml": "\u00e4", "ouml": "\u00f6",
                "uuml": "\u00fc", "szlig": "\u00df"}


def _pod_escape(name: str) -> str:
    if name.isdigit():
        return chr(int(name))
    if name[:1] in "xX" and re.fullmatch(r"[xX][0-9a-fA-F]+", name):
        return chr(int(name[1:], 16))
    if name[:2] == "0x":
        return chr(int(name, 16))
    return _POD_ESCAPES.get(name, f"E<{name}>")


def _pod_link(body: str) -> str:
    """Text of ``L<...>``: its text part if given (``L<text|target>``), else a readable target."""
    if "|" in body:
        return body.split("|", 1)[0]
    if re.match(r"\w+:[^:\s]\S*$", body):                  # a URL
        return body
    name, _, section = body.partition("/")
    section = section.strip('"')
    if name and section:
        return f'"{section}" in {name}'
    return f'"{section}"' if section else name


def pod_inline(text: str) -> str:
    """Expand POD formatting codes (``B<>``, ``C<< >>``, ``L<>``, ``E<>``, ``X<>``...), innermost first."""
    def expand(m: re.Match) -> str:
        if m.group(2) and len(m.group("close")) != len(m.group(2)):
            return m.group(0)                           # unbalanced: leave it as written
        code, body = m.group(1), m.group(3) if m.group(2) else m.group(5)
        if code == "E":
            return _pod_escape(body)
        if code in "XZ":
            return ""
        if code == "L":
            return _pod_link(body)
        if code == "S":
            return body.replace(" ", "\u00a0")
        return body                                     # B, I, C, F and unknown codes: their text

    for _ in range(20):                                 # nested codes: expand until nothing changes
        expanded = _POD_CODE.sub(expand, text)
        if expanded == text:
            break
        text = expanded
    return text


def pod_to_text(pod: str) -> str:
    """Plain text of a POD document, in the spirit of ``pod2text``.

    ``=head1``..``=head4`` become heading lines, ordinary paragraphs are joined into one line each
    with their formatting codes expanded, verbatim (indented) paragraphs are kept as they are,
    ``=item`` starts a list entry ("* ", "1. " or the item's text), ``=begin``/``=end`` and
    ``=for`` blocks for other formatters are dropped, and nothing outside ``=pod``..``=cut`` counts
    when the file starts with code.
    """
    out: list[str] = []
    in_pod = pod.lstrip().startswith("=")
    skip_until: str | None = None
    for block in re.split(r"\n[ \t]*\n", pod.replace("\r\n", "\n")):
        if not block.strip():
            continue
        command = re.match(r"=([a-zA-Z]\w*)\s*(.*)", block, re.S)
        if command:
            name, arg = command.group(1), command.group(2).strip()
            in_pod = name != "cut"
            if skip_until is not None:
                if name == "end" and arg.split()[:1] == [skip_until]:
                    skip_until = None
                continue
            if name.startswith("head"):
                out.append(pod_inline(" ".join(arg.split())))
            elif name == "item":
                label = arg if arg else "*"
                if label.rstrip(".").isdigit():
                    label = label.rstrip(".") + "."
                out.append(pod_inline(" ".join(label.split())))
            elif name == "begin":
                target = arg.split()[:1]
                if target and target[0].lstrip(":") != "text":
                    skip_until = target[0]
            elif name == "for":
                target, _, rest = arg.partition(" ")
                if target.lstrip(":") == "text" and rest.strip():
                    out.append(rest.strip())
            continue                                    # =pod, =cut, =over, =back, =encoding, =end
        if not in_pod or skip_until is not None:
            continue
        if block[:1] in " \t":                          # verbatim paragraph
            out.append(block.rstrip())
        else:
            out.append(pod_inline(" ".join(block.split())))
    return "\n\n".join(out)


def pod_pages(doc_root: Path, pattern: str = "*.pod") -> Pages:
    """(path, text) of each POD file under ``doc_root`` matching ``pattern``."""
    for path in sorted(doc_root.rglob(pattern)):
        yield path.relative_to(doc_root).as_posix(), pod_to_text(path.read_text(encoding="utf-8", errors="replace"))


# --- the packages --------------------------------------------------------------------------------

def python_pages(root: Path) -> Pages:
    """Python (Sphinx): the ``role="main"`` div; index, search and module-index pages skipped."""
    return html_pages(_one_folder(root, "usr/share/doc/python3.*-doc/html"),
                      exclude=r"(genindex|search|py-modindex|_static|_sources|_images|_downloads)",
                      blocks=SPHINX_BLOCK_TAGS)


def linux_pages(root: Path) -> Pages:
    """Linux: each ``.rst``/``.txt`` file of ``Documentation/``, as it is."""
    return gzip_text_pages(_one_folder(root, "usr/share/doc/linux-doc-*/Documentation"), (".rst", ".txt"))


_MDBOOKS = r"(book|edition-guide|embedded-book|nomicon|reference|rust-by-example|rustc|rustdoc|unstable-book)/"
_RUSTDOC_DROP = (
    # trait implementations repeat the trait's documentation on every implementing type's page
    element("h2", id="trait-implementations"), element("div", id="trait-implementations-list"),
    element("h2", id="synthetic-implementations"), element("div", id="synthetic-implementations-list"),
    element("h2", id="blanket-implementations"), element("div", id="blanket-implementations-list"),
    element("span", class_="out-of-band"), element("span", class_="rightside"), element("a", class_="anchor"),
    element("a", class_="test-arrow"), element("summary", class_="hideme"), element("button"),
    element("div", class_="tooltip"),
)


def rust_pages(root: Path) -> Pages:
    """Rust: the mdBook books (``<main>``), the standard library's API pages (``std``,
    ``proc_macro``, ``test``: ``section#main-content`` less trait implementations), and the
    compiler error index. ``core`` and ``alloc`` are skipped (``std`` re-exports their items), as
    are the source listings, the redirect stubs of old book editions and the print-all pages."""
    html = _one_folder(root, "usr/share/doc/rust-doc/html")
    books = html_pages(html, include=_MDBOOKS, main=element("main"),
                       exclude=r"(.*/)?print\.html$|book/(first|second|2018)-edition/|.*/(toc|404)\.html$")
    api = html_pages(html, include=r"(std|proc_macro|test)/", main=element("section", id="main-content"),
                     drop=_RUSTDOC_DROP)
    errors = html_pages(html, include=r"error-index\.html$", main=element("body"),
                        drop=(element("div", class_="error-undescribed"), *_RUSTDOC_DROP))
    return _merge(books, api, errors)


def openjdk_pages(root: Path) -> Pages:
    """OpenJDK (javadoc): ``<main>`` of each class and package page, without the summary tables
    (their first sentences repeat the member details below); ``class-use`` pages, trees and
    indices skipped."""
    api = _one_folder(root, "usr/share/doc/openjdk-*-jre-headless/api")
    return html_pages(api, include=r"(java|jdk)\.[\w.]+/", exclude=r".*(/class-use/|-tree\.html$|/package-use\.html$)",
                      main=element("main"), drop=(element("section", class_="summary"), element("nav")))


def scipy_pages(root: Path) -> Pages:
    """SciPy (pydata Sphinx theme): ``<main>`` less the previous/next links; indices and source
    listings skipped."""
    html = _one_folder(root, "usr/share/doc/python-scipy-doc/html")
    return html_pages(html, exclude=r"(genindex|search|py-modindex|_static|_sources|_images|_modules|_panels_static)",
                      main=element("main"), drop=(element("div", class_="prev-next-area"),))


def postgresql_pages(root: Path) -> Pages:
    """PostgreSQL (DocBook): the page body less the navigation header and footer; the index skipped."""
    html = _one_folder(root, "usr/share/doc/postgresql-doc-*/html")
    return html_pages(html, exclude=r"bookindex\.html$", main=element("body"),
                      drop=(element("div", class_="navheader"), element("div", class_="navfooter")))


def sqlite_pages(root: Path) -> Pages:
    """SQLite: the page body less the menu bar and the syntax-diagram images."""
    html = _one_folder(root, "usr/share/doc/sqlite3")
    return html_pages(html, exclude=r"search\.d/", main=element("body"),
                      drop=(element("div", class_="nosearch"), element("div", class_="imgcontainer"), element("svg")))


def octave_pages(root: Path) -> Pages:
    """Octave (Texinfo HTML): the page body less the navigation headers and chapter menus; the
    index pages skipped."""
    html = _one_folder(root, "usr/share/doc/octave")
    return html_pages(html, include=r"(octave|liboctave)\.html/", exclude=r".*Index\.html$", main=element("body"),
                      drop=(element("div", class_="header"), element("table", class_="menu")))


def r_manual_pages(root: Path) -> Pages:
    """R's manuals (Texinfo HTML, one page each): the body less the navigation headers and the
    table of contents."""
    return html_pages(_one_folder(root, "usr/share/doc/r-doc-html/manual"), main=element("body"),
                      drop=(element("div", class_="header"), element("div", class_="contents"),
                            element("table", class_="menu")))


def ghc_pages(root: Path) -> Pages:
    """GHC: the User's Guide only (Sphinx: the ``role="main"`` body); the Haddock pages of the
    libraries are left out."""
    return sphinx_pages(_one_folder(root, "usr/share/doc/ghc-doc/html/users_guide"))


def perl_pages(root: Path) -> Pages:
    """Perl: each core ``.pod`` document (perlfunc, perlop, perlre, the FAQs, ...) as text."""
    return pod_pages(_one_folder(root, "usr/share/perl/5.*/pod"))


_SPHINX_SKIP = r"(.*/)?(genindex|search|py-modindex|_static|_sources|_images|_downloads|_modules|_panels_static)\b"


def sphinx_pages(doc_root: Path, *, exclude: str | None = None, main: Selector = element(role="main"),
                 drop: Sequence[Selector] = ()) -> Pages:
    """Sphinx HTML of any theme: the element with ``role="main"`` (a ``div`` in the classic
    theme, ``<main>`` in the pydata theme, ``<article>`` in furo), without the index, search and
    module-index pages, the page sources and the highlighted source listings (``_modules``)."""
    skip = _SPHINX_SKIP if exclude is None else f"{_SPHINX_SKIP}|{exclude}"
    return html_pages(doc_root, exclude=skip, main=main,
                      drop=(element("div", class_="prev-next-area"), element("div", class_="related"), *drop))


def django_pages(root: Path) -> Pages:
    """Django (Sphinx, own theme): the ``div#yui-main`` body."""
    return sphinx_pages(_one_folder(root, "usr/share/doc/python-django-doc/html"), main=element("div", id="yui-main"))


def llvm_pages(root: Path) -> Pages:
    """LLVM (Sphinx): the main body; the AMDGPU instruction-syntax tables skipped."""
    return sphinx_pages(_one_folder(root, "usr/share/doc/llvm-*-doc/html"), exclude=r"AMDGPU/")


def sqlalchemy_pages(root: Path) -> Pages:
    """SQLAlchemy (Sphinx, own theme): the ``div#docs-body`` body."""
    return sphinx_pages(_one_folder(root, "usr/share/doc/python-sqlalchemy-doc/html"))


def sympy_pages(root: Path) -> Pages:
    """SymPy (Sphinx, furo theme): the ``<article role="main">`` body."""
    return sphinx_pages(_one_folder(root, "usr/share/doc/python-sympy-doc/html"))


def pandas_pages(root: Path) -> Pages:
    """pandas (Sphinx, pydata theme): ``<main>`` less the previous/next links."""
    return sphinx_pages(_one_folder(root, "usr/share/doc/python-pandas-doc/html"))


def cmake_pages(root: Path) -> Pages:
    """CMake (Sphinx): the main body."""
    return sphinx_pages(_one_folder(root, "usr/share/doc/cmake-data/html"))


def statsmodels_pages(root: Path) -> Pages:
    """statsmodels (Sphinx, material theme): the ``role="main"`` body, generated API pages included."""
    return sphinx_pages(_one_folder(root, "usr/share/doc/python-statsmodels-doc/html"))


def astropy_pages(root: Path) -> Pages:
    """Astropy (Sphinx, bootstrap theme): the ``role="main"`` body."""
    return sphinx_pages(_one_folder(root, "usr/share/doc/python-astropy-doc/html"))


def git_pages(root: Path) -> Pages:
    """Git (AsciiDoc HTML): ``div#content`` of the manual pages, guides and technical notes (the
    ``RelNotes`` release notes and the ``.txt`` sources of the same pages skipped)."""
    return html_pages(_one_folder(root, "usr/share/doc/git-doc"), exclude=r"RelNotes/",
                      main=element("div", id="content"))


def nodejs_pages(root: Path) -> Pages:
    """Node.js: ``div#apicontent`` of each API page (the table of contents and the navigation skipped)."""
    return html_pages(_one_folder(root, "usr/share/doc/nodejs/api"), main=element("div", id="apicontent"))


def skimage_pages(root: Path) -> Pages:
    """scikit-image (Sphinx): the ``role="main"`` body of the user guide, API and gallery pages."""
    return sphinx_pages(_one_folder(root, "usr/share/doc/python-skimage-doc/html"))


def erlang_pages(root: Path) -> Pages:
    """Erlang/OTP: ``div#content`` of the guides and the reference manual pages, less the
    heading-link icons and the copyright footer."""
    return html_pages(_one_folder(root, "usr/share/doc/erlang-doc"), include=r"(doc|lib|erts-[\d.]+)/",
                      main=element("div", id="content"),
                      drop=(element("div", class_="title-anchors"), element("div", class_="footer"), element("nav")))


def _merge(*sources: Pages) -> Pages:
    """The pages of several sorted sources, in one sorted path order."""
    return iter(sorted((page for source in sources for page in source), key=lambda page: page[0]))


# Package name prefix -> extractor.
EXTRACTORS: dict[str, Callable[[Path], Pages]] = {
    "python3": python_pages,
    "linux-doc": linux_pages,
    "rust-doc": rust_pages,
    "openjdk-": openjdk_pages,
    "python-scipy-doc": scipy_pages,
    "postgresql-doc": postgresql_pages,
    "sqlite3-doc": sqlite_pages,
    "octave-doc": octave_pages,
    "perl-doc": perl_pages,
    "python-django-doc": django_pages,
    "llvm-": llvm_pages,
    "python-sqlalchemy-doc": sqlalchemy_pages,
    "python-sympy-doc": sympy_pages,
    "python-pandas-doc": pandas_pages,
    "cmake-doc": cmake_pages,
    "erlang-doc": erlang_pages,
    "python-statsmodels-doc": statsmodels_pages,
    "python-astropy-doc": astropy_pages,
    "git-doc": git_pages,
    "nodejs-doc": nodejs_pages,
    "python-skimage-doc": skimage_pages,
    "r-doc-html": r_manual_pages,
    "ghc-doc": ghc_pages,
}


def extractor_for(package: str) -> Callable[[Path], Pages] | None:
    for prefix, extractor in EXTRACTORS.items():
        if package.startswith(prefix):
            return extractor
    return None
