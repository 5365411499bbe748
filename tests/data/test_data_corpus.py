"""Corpus building pieces: HTML to text, cleaning, dedup, shards and the toy corpus (no downloads)."""

import gzip
import json

import pytest

from dma_jax.data.corpus import clean_text, collect_documents, package_pages, read_documents, write_shards
from dma_jax.data.html_text import html_to_text
from dma_jax.data.toy_corpus import write_toy_corpus

PAGE = """<html><head><style>p {color: red}</style><script>var x = 1;</script></head><body>
<div class="sphinxsidebar">Navigation junk</div>
<div class="body" role="main"><h1>Title<a class="headerlink" href="#t">\u00b6</a></h1>
<p>Some   words
 over lines &amp; an entity.</p><div><p>Nested</p></div><pre>def f():
    return 1</pre></div><div class="footer">Footer</div></body></html>"""


def test_html_to_text_keeps_main_body_only():
    text = clean_text(html_to_text(PAGE))
    assert text == "Title\n\nSome words over lines & an entity.\n\nNested\n\ndef f():\n    return 1"


def test_html_without_main_body_is_empty():
    assert html_to_text("<html><body><p>no main</p></body></html>") == ""


@pytest.mark.parametrize("raw, clean", [
    ("a  \r\nb\r\n", "a\nb"),
    ("a\n\n\n\n\nb", "a\n\nb"),
    ("  lead\n", "lead"),
    ("cafe\u0301", "caf\u00e9"),
], ids=["crlf-trailing-space", "blank-runs", "outer-whitespace", "nfc"])
def test_clean_text(raw, clean):
    assert clean_text(raw) == clean


def test_collect_documents_drops_short_and_duplicates():
    long = "x" * 300
    pages = [("a.rst", long), ("b.rst", "short"), ("c.rst", long + "\n\n\n"), ("d.rst", "y" * 300)]
    documents, counts = collect_documents([("pkg", pages)], min_chars=200)
    assert [d["id"] for d in documents] == ["pkg:a.rst", "pkg:d.rst"]
    assert counts["pkg"] == {"pages": 4, "documents": 2, "text_bytes": 600, "too_short": 1, "duplicates": 1}


def test_linux_and_python_extractors(tmp_path):
    linux = tmp_path / "linux" / "usr/share/doc/linux-doc-6.1/Documentation"
    (linux / "sub").mkdir(parents=True)
    (linux / "sub/a.rst.gz").write_bytes(gzip.compress(b"Kernel text"))
    (linux / "b.yaml.gz").write_bytes(gzip.compress(b"skipped: yes"))
    python = tmp_path / "py" / "usr/share/doc/python3.11-doc/html"
    (python / "library").mkdir(parents=True)
    (python / "library/os.html").write_text(PAGE)
    (python / "genindex-A.html").write_text(PAGE)
    assert list(package_pages("linux-doc-6.1", tmp_path / "linux")) == [("sub/a.rst", "Kernel text")]
    assert [path for path, _ in package_pages("python3.11-doc", tmp_path / "py")] == ["library/os.html"]
    with pytest.raises(ValueError, match="no page extractor"):
        package_pages("dict-gcide", tmp_path)


def test_shards_round_trip(tmp_path):
    documents = [{"id": f"d{i}", "text": "w\u00e9 " * (i + 1)} for i in range(40)]
    shards = write_shards(documents, tmp_path, shard_bytes=300, preset=1)
    assert len(shards) > 1 and sum(s["documents"] for s in shards) == 40
    (tmp_path / "manifest.json").write_text(json.dumps({"shards": shards}))
    assert list(read_documents(tmp_path)) == documents


def test_toy_corpus_is_deterministic(tmp_path):
    write_toy_corpus(tmp_path / "a", 20, seed=1)
    write_toy_corpus(tmp_path / "b", 20, seed=1)
    assert list(read_documents(tmp_path / "a")) == list(read_documents(tmp_path / "b"))
