"""tiktoken encodings that load without network access.

tiktoken downloads its BPE files on first use. ``cl100k_base`` and ``o200k_base`` are bundled
here (the files tiktoken itself would download, byte for byte) and placed in tiktoken's own
cache directory when missing: ``$TIKTOKEN_CACHE_DIR`` if you set it, else its default. tiktoken
then checks their hashes as usual. Other encodings still need the network once, or their file
in that cache.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from rag_pgstore.errors import MissingDependencyError, UnsupportedError

if TYPE_CHECKING:
    import tiktoken

__all__ = ["BUNDLED", "load_encoding"]

_BLOBS = "https://openaipublic.blob.core.windows.net/encodings/"
BUNDLED = ("cl100k_base", "o200k_base")
_HERE = Path(__file__).parent / "tiktoken_cache"


def _cache_dir() -> str:
    """Where tiktoken looks, by its own rules (``tiktoken.load.read_file_cached``)."""
    for variable in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if variable in os.environ:
            return os.environ[variable]
    return os.path.join(tempfile.gettempdir(), "data-gym-cache")


def _seed(name: str) -> None:
    cache_dir = _cache_dir()
    if name not in BUNDLED or cache_dir == "":  # "" is tiktoken's "no cache": leave it alone
        return
    key = hashlib.sha1(f"{_BLOBS}{name}.tiktoken".encode()).hexdigest()
    target = Path(cache_dir) / key
    if target.exists():
        return
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f"{key}.{uuid.uuid4().hex}.tmp")
        shutil.copyfile(_HERE / key, partial)
        partial.replace(target)  # atomic: a concurrent reader never sees half a file
    except OSError:
        pass  # a read-only cache: tiktoken will say what is missing


@functools.cache
def load_encoding(name_or_model: str) -> tiktoken.Encoding:
    """Return the tiktoken encoding named ``name_or_model`` (or used by that model)."""
    try:
        import tiktoken
    except ImportError as exc:
        raise MissingDependencyError(
            "expected tiktoken to be installed; pip install 'rag-pgstore[tiktoken]'"
        ) from exc
    name = name_or_model
    if name not in tiktoken.list_encoding_names():
        try:
            name = tiktoken.encoding_name_for_model(name_or_model)
        except KeyError:
            raise UnsupportedError(
                f"expected a tiktoken encoding or model name, got {name_or_model!r}; "
                f"encodings: {', '.join(tiktoken.list_encoding_names())}"
            ) from None
    _seed(name)
    try:
        return tiktoken.get_encoding(name)
    except Exception as exc:  # network errors surface as many types
        raise UnsupportedError(
            f"could not load tiktoken encoding {name!r} ({exc}); offline, only "
            f"{' and '.join(BUNDLED)} are bundled: place the file tiktoken downloads in "
            f"$TIKTOKEN_CACHE_DIR ({_cache_dir()}) or allow one download"
        ) from exc
