"""Build a plain-text corpus from Debian documentation packages, offline-shippable.

``python -m dma_jax.data.corpus build --out data/corpus`` downloads the packages' ``.deb`` files
with ``apt-get download`` (no system install; run ``apt-get update`` once first), unpacks them with
``dpkg-deb -x`` into a cache folder, turns every page into one document of clean text (one
extractor per package, ``dma_jax.data.doc_extractors``), drops duplicates and tiny pages, and
writes:

* ``docs-NNNNN.jsonl.xz``: xz-compressed JSON lines ``{"id": "<package>:<path>", "text": ...}``,
  one document per line; packages in ``--packages`` order, each package's pages in sorted path
  order;
* ``manifest.json``: provenance (package, version, licence, ``.deb`` sha256, bytes, document
  counts) and each shard's size and sha256.

The compressed shards must stay under ``--max-mib`` (default 60) so that the corpus fits in one
64 MiB transfer to a machine without internet; the build fails otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import re
import subprocess
import sys
import time
import unicodedata
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from collections.abc import Iterable, Iterator
from pathlib import Path

from dma_jax.data.doc_extractors import extractor_for

# Package -> licence of the text we take from it (the package's debian/copyright says more).
# The default build takes all of them, in this order.
LICENCES = {
    "python3.11-doc": "PSF-2.0 (Python Software Foundation License; the Python 3.11 documentation)",
    "linux-doc-6.1": "GPL-2.0-only (Linux kernel Documentation/; a few files are dual-licensed, "
                     "e.g. GPL-2.0 OR CC-BY-4.0, as their SPDX lines say)",
    "openjdk-17-doc": "GPL-2.0-only WITH Classpath-exception-2.0 (OpenJDK 17 API documentation)",
    "rust-doc": "MIT OR Apache-2.0 (Rust books, standard library documentation, error index)",
    "perl-doc": "GPL-1.0-or-later OR Artistic-1.0-Perl (Perl 5.36 core documentation)",
    "postgresql-doc-15": "PostgreSQL (PostgreSQL 15 documentation)",
    "sqlite3-doc": "public domain (SQLite documentation)",
    "python-scipy-doc": "BSD-3-Clause (SciPy documentation)",
    "octave-doc": "GPL-3.0-or-later (GNU Octave manual)",
    "erlang-doc": "Apache-2.0 (Erlang/OTP documentation)",
    "python-sqlalchemy-doc": "MIT (SQLAlchemy documentation)",
    "python-pandas-doc": "BSD-3-Clause (pandas documentation)",
    "llvm-15-doc": "Apache-2.0 WITH LLVM-exception (LLVM 15 documentation)",
    "python-django-doc": "BSD-3-Clause (Django documentation)",
    "python-sympy-doc": "BSD-3-Clause (SymPy documentation)",
    "cmake-doc": "BSD-3-Clause (CMake documentation; its copyright file ships in cmake-data)",
    "python-statsmodels-doc": "BSD-3-Clause (statsmodels documentation)",
    "python-astropy-doc": "BSD-3-Clause (Astropy documentation)",
    "git-doc": "GPL-2.0-only (Git manual pages and guides)",
    "nodejs-doc": "MIT (Node.js API documentation)",
    "python-skimage-doc": "BSD-3-Clause (scikit-image documentation)",
    "ghc-doc": "BSD-3-Clause (the GHC User's Guide; the library pages are not taken)",
    "r-doc-html": "GPL-2.0-or-later (R manuals: An Introduction to R, the language definition, extensions, FAQ, ...)",
}
DEFAULT_PACKAGES = tuple(LICENCES)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_deb(package: str, cache: Path) -> Path:
    """The package's ``.deb`` in ``cache``, fetched with ``apt-get download`` unless already there."""
    cache.mkdir(parents=True, exist_ok=True)
    found = sorted(cache.glob(f"{package}_*.deb"))
    if not found:
        result = subprocess.run(["apt-get", "download", package], cwd=cache, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"apt-get download {package} failed (run `apt-get update` first?):\n{result.stderr}")
        found = sorted(cache.glob(f"{package}_*.deb"))
    return found[-1]


def unpack_deb(deb: Path, cache: Path) -> Path:
    """``dpkg-deb -x`` into ``cache/<deb stem>`` (once); returns that folder."""
    root = cache / deb.stem
    if not (root / ".unpacked").exists():
        root.mkdir(parents=True, exist_ok=True)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        (root / ".unpacked").touch()
    return root


def deb_field(deb: Path, field: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), field], check=True, capture_output=True, text=True).stdout.strip()


def clean_text(text: str) -> str:
    """NFC-normalised text with ``\\n`` newlines, no trailing spaces, at most one blank line in a row."""
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = text.replace("\x00", "").replace("\u00b6", "")
    lines = [line.rstrip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def package_pages(package: str, root: Path) -> Iterator[tuple[str, str]]:
    """(path, raw text) for each page of an unpacked package, in sorted path order."""
    extractor = extractor_for(package)
    if extractor is None:
        raise ValueError(f"no page extractor for package {package!r}; known: {sorted(LICENCES)}")
    return extractor(root)


def _extract(args: tuple[str, Path]) -> list[tuple[str, str]]:
    return list(package_pages(*args))


def _compress(args: tuple[bytes, int]) -> bytes:
    data, preset = args
    return lzma.compress(data, preset=preset)


def write_shards(documents: list[dict], out: Path, shard_bytes: int, preset: int = 6) -> list[dict]:
    """Write ``documents`` as ``docs-NNNNN.jsonl.xz`` of about ``shard_bytes`` uncompressed each."""
    chunks, current, size = [], [], 0
    for doc in documents:
        line = (json.dumps(doc, ensure_ascii=False) + "\n").encode()
        current.append(line)
        size += len(line)
        if size >= shard_bytes:
            chunks.append(current)
            current, size = [], 0
    if current:
        chunks.append(current)
    payloads = [b"".join(chunk) for chunk in chunks]
    with ThreadPoolExecutor() as pool:        # lzma releases the GIL while it compresses
        compressed = list(pool.map(_compress, [(p, preset) for p in payloads]))
    shards = []
    for i, (chunk, payload, blob) in enumerate(zip(chunks, payloads, compressed)):
        path = out / f"docs-{i:05d}.jsonl.xz"
        path.write_bytes(blob)
        shards.append({"file": path.name, "documents": len(chunk), "jsonl_bytes": len(payload),
                       "compressed_bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest()})
    return shards


def read_documents(corpus: str | Path) -> Iterator[dict]:
    """Yield ``{"id", "text"}`` for every document of a built corpus, in manifest order."""
    corpus = Path(corpus)
    manifest = json.loads((corpus / "manifest.json").read_text())
    for shard in manifest["shards"]:
        with lzma.open(corpus / shard["file"], "rt", encoding="utf-8") as f:
            for line in f:
                yield json.loads(line)


def collect_documents(sources: Iterable[tuple[str, Iterable[tuple[str, str]]]], min_chars: int) -> tuple[list[dict], dict]:
    """Clean, drop pages shorter than ``min_chars`` and exact duplicates; per-package counts."""
    seen, documents, counts = set(), [], {}
    for package, pages in sources:
        stats = counts.setdefault(package, {"pages": 0, "documents": 0, "text_bytes": 0, "too_short": 0, "duplicates": 0})
        for path, raw in pages:
            stats["pages"] += 1
            text = clean_text(raw)
            digest = hashlib.sha256(text.encode()).digest()
            if len(text) < min_chars:
                stats["too_short"] += 1
            elif digest in seen:
                stats["duplicates"] += 1
            else:
                seen.add(digest)
                documents.append({"id": f"{package}:{path}", "text": text})
                stats["documents"] += 1
                stats["text_bytes"] += len(text.encode())
    return documents, counts


def build(out: Path, cache: Path, packages: Iterable[str], *, min_chars: int = 200,
          shard_mib: float = 16.0, max_mib: float = 60.0, preset: int = 6, workers: int = 2) -> dict:
    """Download, unpack, extract (``workers`` processes, one package each), clean, shard (xz
    ``preset``); writes and returns the manifest."""
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    debs = {package: download_deb(package, cache) for package in packages}
    roots = {package: unpack_deb(deb, cache) for package, deb in debs.items()}
    for package in debs:                                  # fail early on an unknown package
        if extractor_for(package) is None:
            raise ValueError(f"no page extractor for package {package!r}; known: {sorted(LICENCES)}")
    with ProcessPoolExecutor(max(1, workers)) as pool:    # results come back in package order
        pages = pool.map(_extract, [(p, roots[p]) for p in debs])
        documents, counts = collect_documents(zip(debs, pages), min_chars)
    for old in out.glob("docs-*.jsonl.xz"):
        old.unlink()
    shards = write_shards(documents, out, int(shard_mib * 2**20), preset)
    compressed = sum(s["compressed_bytes"] for s in shards)
    sources = []
    for package, deb in debs.items():
        copyright_file = next(roots[package].glob(f"usr/share/doc/{package}/copyright"), None)
        sources.append({
            "package": package, "version": deb_field(deb, "Version"), "deb": deb.name,
            "deb_bytes": deb.stat().st_size, "deb_sha256": sha256_of(deb),
            "licence": LICENCES.get(package, "see the package's copyright file"),
            "copyright_file": f"/usr/share/doc/{package}/copyright",
            "copyright_sha256": sha256_of(copyright_file) if copyright_file else None,
            **counts[package],
        })
    manifest = {
        "format": "docs-NNNNN.jsonl.xz: one JSON object {id, text} per line, UTF-8, xz-compressed",
        "documents": len(documents), "text_bytes": sum(c["text_bytes"] for c in counts.values()),
        "jsonl_bytes": sum(s["jsonl_bytes"] for s in shards),
        "compressed_bytes": compressed, "min_chars": min_chars, "xz_preset": preset,
        "sources": sources, "shards": shards,
        "build_seconds": round(time.perf_counter() - start, 1),
        "command": "python -m dma_jax.data.corpus " + " ".join(sys.argv[1:]),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    if compressed > max_mib * 2**20:
        raise SystemExit(f"compressed corpus is {compressed / 2**20:.1f} MiB > --max-mib {max_mib}")
    return manifest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dma_jax.data.corpus", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="download, extract, clean and shard the corpus")
    b.add_argument("--out", type=Path, default=Path("data/corpus"))
    b.add_argument("--cache", type=Path, default=Path("data/cache/debs"), help="where .deb files are downloaded and unpacked")
    b.add_argument("--packages", nargs="+", default=list(DEFAULT_PACKAGES))
    b.add_argument("--min-chars", type=int, default=200, help="drop documents shorter than this")
    b.add_argument("--shard-mib", type=float, default=16.0, help="uncompressed text per shard")
    b.add_argument("--max-mib", type=float, default=60.0, help="fail if the compressed shards exceed this")
    b.add_argument("--xz-preset", type=int, default=6, choices=range(10), help="xz compression level")
    b.add_argument("--workers", type=int, default=2, help="processes extracting packages in parallel")
    args = parser.parse_args(argv)
    manifest = build(args.out, args.cache, args.packages, min_chars=args.min_chars,
                     shard_mib=args.shard_mib, max_mib=args.max_mib, preset=args.xz_preset,
                     workers=args.workers)
    print(json.dumps({k: manifest[k] for k in ("documents", "text_bytes", "jsonl_bytes", "compressed_bytes", "build_seconds")}))


if __name__ == "__main__":
    main()
