"""A run's tables (metrics, layers), written a part per flush and read as one table.

A table named ``layers.parquet`` is, on disk, up to two things:

    layers.parquet         the compacted rows (a finished run; every run gradlab wrote
                           before parts existed); its metadata says which parts it holds
    layers.parts/          Parquet parts, ``<first>-<last>.parquet`` by flush number

A flush writes only its new rows as one part, so its cost does not grow with the run and
the writer keeps nothing it has written. Parts of equal span are merged FAN at a time
(up to MERGE_MAX_ROWS rows), which bounds how many files a reader of a live run opens;
``compact`` streams everything into the single file when a session ends. Every write is a
temp file renamed into place: a part whose range another part covers, or whose flush the
compacted file already holds, is a leftover of an interrupted merge and is skipped by
readers and removed by the next writer. Never imports torch.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from gradlab.errors import RunDirError
from gradlab.file_io import arrow_path, atomic_write, write_parquet

__all__ = ["TableWriter", "check", "exists", "files", "read", "remove", "schema_names"]

FAN = 8  # parts of one span merged at once
MERGE_MAX_ROWS = 1 << 20  # no merge past a row group of rows: such parts read as well as one file
ROW_GROUP_ROWS = 1 << 20  # rows per row group of a compacted file (pandas' default)
_THROUGH = b"gradlab.parts_through"  # the compacted file holds parts 0..this
_PART = re.compile(r"^(\d{8,})-(\d{8,})\.parquet$")


def parts_dir(path: Path) -> Path:
    """``layers.parquet`` -> ``layers.parts`` beside it."""
    path = Path(path)
    return path.with_name(path.name.removesuffix(".parquet") + ".parts")


def _parts_through(path: Path) -> int:
    """The last part the compacted file holds (-1: none, or a file from before parts)."""
    try:
        meta = pq.read_schema(arrow_path(path)).metadata or {}
    except Exception as e:  # pyarrow raises several unrelated types for damaged files
        raise RunDirError(f"{path} cannot be read as Parquet ({type(e).__name__}: {e}); the file is damaged") from e
    return int(meta.get(_THROUGH, b"-1"))


def _live_parts(path: Path, through: int) -> list[tuple[int, int, Path]]:
    """(first, last, file) of the parts a reader takes, in order: not held by the compacted
    file, not covered by a merged part."""
    folder = parts_dir(path)
    if not folder.is_dir():
        return []
    found = []
    for f in folder.iterdir():
        m = _PART.match(f.name)
        if m:
            found.append((int(m.group(1)), int(m.group(2)), f))
    found.sort(key=lambda p: (p[0], -p[1]))
    live, reached = [], through
    for first, last, f in found:
        if first > reached:
            live.append((first, last, f))
            reached = last
    return live


def files(path: Path) -> list[Path]:
    """The files holding table ``path`` (e.g. run_dir / "layers.parquet"), in row order."""
    path = Path(path)
    base = path.is_file()
    through = _parts_through(path) if base else -1
    return ([path] if base else []) + [f for _, _, f in _live_parts(path, through)]


def exists(path: Path) -> bool:
    """Whether table ``path`` has a file or a part (without reading them)."""
    path = Path(path)
    folder = parts_dir(path)
    return path.is_file() or folder.is_dir() and any(_PART.match(f.name) for f in folder.iterdir())


def check(path: Path) -> None:
    """RunDirError naming the first damaged file of table ``path`` (a truncated file has no
    readable footer); reads only the footers, so listing many runs stays cheap."""
    for f in files(path):
        _read(f, pq.read_metadata)


def schema_names(path: Path) -> set[str]:
    """The columns of table ``path`` (those of any of its files)."""
    names: set[str] = set()
    for f in files(path):
        names |= set(_read(f, pq.read_schema).names)
    return names


def read(path: Path, columns: list[str] | None = None, filters=None,
         read_dictionary: list[str] | None = None) -> pd.DataFrame | None:
    """Table ``path`` as one frame (columns in the order first written; a column a part
    lacks is missing there); None when it has no file. ``columns``, ``filters`` and
    ``read_dictionary`` as in pyarrow.parquet.read_table."""
    for attempt in range(3):  # a live run's parts may be merged away while they are listed
        try:
            tables = [_read(f, pq.read_table, columns=columns, filters=filters, read_dictionary=read_dictionary)
                      for f in files(path)]  # fmt: skip
            break
        except FileNotFoundError:
            if attempt == 2:
                raise
    if not tables:
        return None
    if len(tables) == 1:
        return tables[0].to_pandas()
    tables = [t.replace_schema_metadata(None) for t in tables]  # one part's pandas notes do not fit all
    return pa.concat_tables(tables, promote_options="permissive").to_pandas()


def _read(f: Path, reader, **kwargs):
    try:
        return reader(arrow_path(f), **kwargs)
    except FileNotFoundError:
        raise
    except Exception as e:  # pyarrow raises several unrelated types for damaged files
        raise RunDirError(f"{f} cannot be read as Parquet ({type(e).__name__}: {e}); the file is damaged") from e


def remove(path: Path) -> None:
    """Delete table ``path``, its file and its parts, without reading them (a run replaced)."""
    Path(path).unlink(missing_ok=True)
    shutil.rmtree(parts_dir(path), ignore_errors=True)


class TableWriter:
    """Appends to table ``path``; one writer per table at a time (the run's lock holder)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.folder = parts_dir(self.path)
        through = _parts_through(self.path) if self.path.is_file() else -1
        self._clean(through)
        self.parts = [(first, last, pq.ParquetFile(arrow_path(f)).metadata.num_rows) for first, last, f in
                      _live_parts(self.path, through)]  # fmt: skip
        self.next = max([through] + [last for _, last, _ in self.parts]) + 1

    def append(self, frame: pd.DataFrame) -> None:
        """Write ``frame`` as the next part, then merge the newest parts if FAN share a span."""
        if not len(frame):
            return
        n = self.next
        write_parquet(self._part(n, n), frame)
        self.next = n + 1
        self.parts.append((n, n, len(frame)))
        self._merge_tail()

    def keep_before(self, column: str, limit: int) -> None:
        """Drop the rows whose ``column`` is ``limit`` or more (a run resumed from an earlier
        point); rewrites the table once, and only if such rows exist."""
        if any(_max(f, column) >= limit for f in files(self.path)):
            self._rewrite(self._files(), lambda t: t.filter(pc.less(t[column], limit)))

    def compact(self) -> None:
        """Stream the compacted file and every part into one compacted file."""
        if self.parts:
            self._rewrite(self._files())

    def max_step(self) -> int:
        """The largest step in the table (-1: none)."""
        highs = [_max(f, "step") for f in self._files()]
        if any(h == float("inf") for h in highs):  # a file without statistics: read the column
            frame = read(self.path, columns=["step"])
            highs = [frame["step"].max()] if frame is not None and len(frame) else []
        highs = [h for h in highs if h != float("-inf")]
        return int(max(highs)) if highs else -1

    # ------------------------------------------------------------------ helpers

    def _part(self, first: int, last: int) -> Path:
        return self.folder / f"{first:08d}-{last:08d}.parquet"

    def _files(self) -> list[Path]:
        return ([self.path] if self.path.is_file() else []) + [self._part(a, b) for a, b, _ in self.parts]

    def _merge_tail(self) -> None:
        while len(self.parts) >= FAN:
            tail = self.parts[-FAN:]
            span = tail[0][1] - tail[0][0]
            rows = sum(r for _, _, r in tail)
            if any(b - a != span for a, b, _ in tail) or rows > MERGE_MAX_ROWS:
                return
            first, last = tail[0][0], tail[-1][1]
            _stream(self._part(first, last), [self._part(a, b) for a, b, _ in tail])
            for a, b, _ in tail:
                self._part(a, b).unlink(missing_ok=True)
            self.parts[-FAN:] = [(first, last, rows)]

    def _rewrite(self, sources: list[Path], keep=None) -> None:
        """Everything in ``sources`` (filtered by ``keep``) into the compacted file, which then
        holds every part written so far; the parts go."""
        if sources:
            _stream(self.path, sources, keep, {_THROUGH: str(self.next - 1).encode()})
        shutil.rmtree(self.folder, ignore_errors=True)
        self.parts = []

    def _clean(self, through: int) -> None:
        """Remove what an interrupted writer left: temp files, parts held elsewhere."""
        if not self.folder.is_dir():
            return
        live = {f for _, _, f in _live_parts(self.path, through)}
        for f in self.folder.iterdir():
            if f not in live:
                f.unlink(missing_ok=True)


def _max(f: Path, column: str):
    """The largest value of ``column`` in file ``f``, from its row-group statistics."""
    meta = _read(f, pq.read_metadata)
    names = meta.schema.names
    if column not in names:
        return float("-inf")
    i = names.index(column)
    highs = [meta.row_group(g).column(i).statistics for g in range(meta.num_row_groups)]
    if any(s is None or not s.has_min_max for s in highs):
        return float("inf")  # no statistics: assume the worst, rewrite
    return max((s.max for s in highs), default=float("-inf"))


def _stream(target: Path, sources: list[Path], keep=None, metadata: dict | None = None) -> None:
    """Concatenate Parquet files into ``target`` one row group at a time (memory bounded by
    ROW_GROUP_ROWS); files whose columns differ (metrics logged under new names) are read
    whole and joined like ``read``."""
    schemas = [_read(f, pq.read_schema) for f in sources]
    if any(not s.equals(schemas[0], check_metadata=False) for s in schemas[1:]):
        frame = pa.concat_tables([_read(f, pq.read_table).replace_schema_metadata(None) for f in sources],
                                 promote_options="permissive")  # fmt: skip
        schema = frame.schema
        chunks = [frame]
    else:
        schema, chunks = schemas[0], None
    schema = schema.with_metadata({**(schema.metadata or {}), **(metadata or {})})

    def write(tmp):
        with pq.ParquetWriter(arrow_path(tmp), schema) as out:
            pending, rows = [], 0
            for table in chunks if chunks is not None else (_read(f, pq.read_table) for f in sources):
                table = keep(table) if keep is not None else table
                pending.append(table.replace_schema_metadata(schema.metadata))
                rows += table.num_rows
                if rows >= ROW_GROUP_ROWS:
                    out.write_table(pa.concat_tables(pending), row_group_size=ROW_GROUP_ROWS)
                    pending, rows = [], 0
            if pending:
                out.write_table(pa.concat_tables(pending), row_group_size=ROW_GROUP_ROWS)

    atomic_write(target, write)
