"""Append-only run tables (gradlab.run_tables): parts per flush, merged and compacted without
losing or repeating a row, read alike whatever state a writer left them in."""

import os

import numpy as np
import pandas as pd
import pytest

from gradlab import run_tables as T
from gradlab.errors import RunDirError


def rows(first: int, n: int = 3) -> pd.DataFrame:
    steps = np.arange(first, first + n, dtype=np.int64)
    return pd.DataFrame({"step": steps, "layer": [f"l{s % 2}" for s in steps], "value": steps * 0.5})


def parts(path) -> list[str]:
    return sorted(p.name for p in T.parts_dir(path).iterdir()) if T.parts_dir(path).exists() else []


def test_each_append_is_a_part_and_the_table_reads_as_one(tmp_path):
    path = tmp_path / "layers.parquet"
    w = T.TableWriter(path)
    assert not T.exists(path) and T.read(path) is None
    for i in range(3):
        w.append(rows(3 * i))
    assert parts(path) == ["00000000-00000000.parquet", "00000001-00000001.parquet", "00000002-00000002.parquet"]
    assert not path.exists() and T.exists(path)
    pd.testing.assert_frame_equal(T.read(path), rows(0, 9))
    assert T.schema_names(path) == {"step", "layer", "value"}


def test_fan_parts_of_one_span_merge_and_big_ones_stay(tmp_path, monkeypatch):
    path = tmp_path / "t.parquet"
    w = T.TableWriter(path)
    for i in range(T.FAN * T.FAN + 1):
        w.append(rows(3 * i))
    assert parts(path) == [f"{0:08d}-{T.FAN ** 2 - 1:08d}.parquet", f"{T.FAN ** 2:08d}-{T.FAN ** 2:08d}.parquet"]
    pd.testing.assert_frame_equal(T.read(path), rows(0, 3 * (T.FAN ** 2 + 1)))
    monkeypatch.setattr(T, "MERGE_MAX_ROWS", 3 * T.FAN - 1)  # a merge of FAN parts would be too big
    path = tmp_path / "u.parquet"
    w = T.TableWriter(path)
    for i in range(T.FAN):
        w.append(rows(3 * i))
    assert len(parts(path)) == T.FAN


def test_compaction_writes_one_file_and_a_new_writer_goes_on_after_it(tmp_path):
    path = tmp_path / "layers.parquet"
    w = T.TableWriter(path)
    for i in range(3):
        w.append(rows(3 * i))
    w.compact()
    assert path.is_file() and parts(path) == []
    assert pd.read_parquet(path).equals(rows(0, 9))  # a finished table is the plain Parquet file it always was
    w2 = T.TableWriter(path)
    w2.append(rows(9))
    assert parts(path) == ["00000003-00000003.parquet"]  # numbered after those the file holds
    pd.testing.assert_frame_equal(T.read(path), rows(0, 12))
    assert w2.max_step() == 11


def test_leftovers_of_an_interrupted_merge_or_compaction_are_neither_read_nor_kept(tmp_path):
    path = tmp_path / "layers.parquet"
    w = T.TableWriter(path)
    for i in range(3):
        w.append(rows(3 * i))
    folder = T.parts_dir(path)
    # a merge that wrote its part and died before removing the two it merged
    rows(0, 6).to_parquet(folder / "00000000-00000001.parquet", index=False)
    (folder / ".00000002-00000002.parquet.x1y2.tmp").write_bytes(b"half a file")
    pd.testing.assert_frame_equal(T.read(path), rows(0, 9))
    # a compaction that wrote the file and died before removing the parts
    w.compact()
    rows(0, 3).to_parquet(folder.parent / "stale.parquet", index=False)
    folder.mkdir()
    os.replace(folder.parent / "stale.parquet", folder / "00000000-00000000.parquet")
    pd.testing.assert_frame_equal(T.read(path), rows(0, 9))
    T.TableWriter(path)  # the next writer cleans up
    assert parts(path) == []


def test_keep_before_drops_later_rows_once_and_only_when_there_are_any(tmp_path):
    path = tmp_path / "layers.parquet"
    w = T.TableWriter(path)
    for i in range(4):
        w.append(rows(3 * i))
    w.keep_before("step", 100)  # nothing to drop: nothing rewritten
    assert len(parts(path)) == 4 and not path.exists()
    w.keep_before("step", 7)
    pd.testing.assert_frame_equal(T.read(path), rows(0, 7))
    w.append(rows(7, 2))
    pd.testing.assert_frame_equal(T.read(path), rows(0, 9))


def test_a_table_of_parts_with_different_columns_reads_as_their_union(tmp_path):
    path = tmp_path / "metrics.parquet"
    w = T.TableWriter(path)
    w.append(pd.DataFrame({"step": [0], "loss": [1.0]}))
    w.append(pd.DataFrame({"step": [1], "err": [0.5]}))
    expected = pd.DataFrame({"step": [0, 1], "loss": [1.0, np.nan], "err": [np.nan, 0.5]})
    pd.testing.assert_frame_equal(T.read(path), expected)
    w.compact()
    pd.testing.assert_frame_equal(T.read(path), expected)


def test_a_table_written_before_parts_existed_is_read_and_continued(tmp_path):
    path = tmp_path / "layers.parquet"
    rows(0, 6).to_parquet(path, index=False)  # a single file without the parts' metadata
    assert T.exists(path)
    w = T.TableWriter(path)
    w.keep_before("step", 4)  # a resume at step 4
    w.append(rows(4, 3))
    w.compact()
    pd.testing.assert_frame_equal(T.read(path), rows(0, 7))


def test_a_damaged_part_names_the_file(tmp_path):
    path = tmp_path / "layers.parquet"
    T.TableWriter(path).append(rows(0))
    bad = T.parts_dir(path) / "00000000-00000000.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(RunDirError, match="00000000-00000000.parquet cannot be read as Parquet"):
        T.read(path)
