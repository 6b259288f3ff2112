"""A dask array as a directory of ``.npy`` files, one per chunk: the array format that needs
nothing beyond NumPy (zarr, in the ``datasets`` extra, is the better one where installed).

Layout: ``<dir>/_npy_chunks.json`` (shape, chunks, dtype) and ``<dir>/<i>.<j>....npy``, named
by the chunk's position in the chunk grid as zarr names its chunks. Each chunk is written by
the task that computes it, on whichever worker runs it; the manifest is written last, so a
directory without one was never finished. Loading builds one task per chunk that reads it.
"""

from __future__ import annotations

import json
import posixpath
from typing import Any

__all__ = ["MANIFEST", "is_dask_array", "load_npy_chunks", "save_npy_chunks"]

MANIFEST = "_npy_chunks.json"
_FORM = "xlibrary-npy-chunks"


def is_dask_array(value: Any) -> bool:
    """Whether ``value`` is a dask array (without importing dask.array when it is not)."""
    return type(value).__module__.startswith("dask.array") and hasattr(value, "chunks")


def _chunk_name(index: tuple[int, ...]) -> str:
    return (".".join(str(i) for i in index) or "0") + ".npy"


def _write_chunk(block: Any, fs: Any, path: str) -> None:
    import numpy as np

    with fs.open(path, "wb") as file:
        np.save(file, np.asarray(block), allow_pickle=False)


def save_npy_chunks(array: Any, fs: Any, path: str, *, compute: bool = True) -> Any:
    """Write the dask ``array`` under ``path`` of ``fs``: the chunks by the workers (the
    scheduler in use: a ``Client`` when one is active), then the manifest. With
    ``compute=False``, nothing is written yet: the returned ``Delayed`` writes it all when
    computed (the manifest after every chunk)."""
    import numpy as np
    from dask.base import compute as compute_all
    from dask.delayed import delayed

    fs.makedirs(path, exist_ok=True)
    blocks = array.to_delayed()
    writes = [
        delayed(_write_chunk, pure=False)(block, fs, posixpath.join(path, _chunk_name(index)))
        for index, block in np.ndenumerate(blocks)
    ]
    manifest = {
        "format": _FORM,
        "version": 1,
        "shape": list(array.shape),
        "chunks": [list(c) for c in array.chunks],
        "dtype": array.dtype.str,
    }
    if not compute:
        return delayed(_write_manifest, pure=False)(writes, fs, path, manifest)
    compute_all(*writes)  # type: ignore[no-untyped-call]
    _write_manifest([], fs, path, manifest)
    return None


def _write_manifest(_written: list[None], fs: Any, path: str, manifest: dict[str, Any]) -> None:
    fs.pipe_file(posixpath.join(path, MANIFEST), json.dumps(manifest).encode())


def _read_chunk(fs: Any, path: str, block_id: tuple[int, ...] | None = None) -> Any:
    import numpy as np

    with fs.open(posixpath.join(path, _chunk_name(block_id or ())), "rb") as file:
        return np.load(file, allow_pickle=False)


def load_npy_chunks(fs: Any, path: str) -> Any:
    """The dask array saved under ``path``: one task per chunk, each reading its file."""
    import dask.array as da
    import numpy as np
    from dask.base import tokenize

    manifest = json.loads(fs.cat_file(posixpath.join(path, MANIFEST)))
    if manifest.get("format") != _FORM:
        raise ValueError(f"{MANIFEST} under {path!r} is not a manifest of npy chunks")
    dtype = np.dtype(manifest["dtype"])
    chunks = tuple(tuple(int(n) for n in c) for c in manifest["chunks"])
    if not chunks:  # a 0-d array: one chunk
        from dask.delayed import delayed

        value = delayed(_read_chunk)(fs, path)
        return da.from_delayed(value, shape=(), dtype=dtype)  # type: ignore[no-untyped-call]
    return da.map_blocks(  # type: ignore[no-untyped-call]
        _read_chunk,
        fs,
        path,
        chunks=chunks,
        dtype=dtype,
        meta=np.empty((0,) * len(chunks), dtype=dtype),
        name=f"load-npy-{tokenize(fs, path, manifest)}",
    )
