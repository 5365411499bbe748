"""The per-package page extractors (dma_jax.data.doc_extractors) on small unpacked trees, POD to
text, and the HTML element selectors (no downloads)."""

from pathlib import Path

import pytest

from dma_jax.data.corpus import LICENCES, clean_text
from dma_jax.data.doc_extractors import extractor_for, pod_inline, pod_to_text
from dma_jax.data.html_text import element, html_to_text


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_every_listed_package_has_an_extractor():
    assert [p for p in LICENCES if extractor_for(p) is None] == []
    assert extractor_for("no-such-doc") is None


def test_pod_to_text_keeps_headings_items_and_verbatim_and_drops_other_formats():
    pod = """#!/usr/bin/perl
code before the pod

=head1 NAME

perlx - B<bold> and C<< $a <=> $b >> and L<perlfunc/open>

=over

=item 1.

First E<lt>itemE<gt>.

=back

    verbatim  stays

=begin html

<p>dropped</p>

=end html

=cut

more code
"""
    assert pod_to_text(pod) == ("NAME\n\nperlx - bold and $a <=> $b and \"open\" in perlfunc\n\n1.\n\nFirst <item>.\n\n"
                                "    verbatim  stays")


@pytest.mark.parametrize("code,text", [("I<italic>", "italic"), ("L<text|target>", "text"), ("X<index>", ""),
                                       ("E<0x41>", "A")])
def test_pod_formatting_codes(code, text):
    assert pod_inline(code) == text


def test_selectors_match_tag_classes_and_attributes():
    page = ('<html><body><nav>menu</nav><section id="main-content" class="a b"><h2>Head</h2><p>Body</p>'
            '<div class="toc">contents</div></section></body></html>')
    assert clean_text(html_to_text(page, element("section", id="main-content"), (element(class_="toc"),))) == "Head\n\nBody"
    assert html_to_text(page, element("section", class_="c")) == ""


def test_sphinx_packages_skip_index_search_and_source_pages(tmp_path):
    body = '<div role="main"><p>{}</p><div class="prev-next-area">next page</div></div>'
    root = _write(tmp_path, {f"usr/share/doc/python-astropy-doc/html/{rel}": body.format(rel)
                             for rel in ("index.html", "table/index.html", "genindex.html", "search.html",
                                         "_modules/astropy/table.html", "_sources/index.html")})
    pages = list(extractor_for("python-astropy-doc")(root))
    assert [(path, clean_text(text)) for path, text in pages] == [("index.html", "index.html"),
                                                                  ("table/index.html", "table/index.html")]


def test_git_and_nodejs_pages_take_their_content_element(tmp_path):
    root = _write(tmp_path, {
        "usr/share/doc/git-doc/git-rebase.html": '<div id="header">h</div><div id="content"><p>Rebase</p></div>',
        "usr/share/doc/git-doc/RelNotes/2.0.html": '<div id="content"><p>notes</p></div>',
        "usr/share/doc/nodejs/api/fs.html": '<div id="gtoc">toc</div><div id="apicontent"><p>File system</p></div>',
    })
    assert [(p, clean_text(t)) for p, t in extractor_for("git-doc")(root)] == [("git-rebase.html", "Rebase")]
    assert [(p, clean_text(t)) for p, t in extractor_for("nodejs-doc")(root)] == [("fs.html", "File system")]


def test_perl_pages_read_the_core_pod_folder(tmp_path):
    root = _write(tmp_path, {"usr/share/perl/5.36/pod/perlintro.pod": "=head1 NAME\n\nperlintro - a start\n",
                             "usr/share/perl/5.36/pod/README": "not pod"})
    assert list(extractor_for("perl-doc")(root)) == [("perlintro.pod", "NAME\n\nperlintro - a start")]
