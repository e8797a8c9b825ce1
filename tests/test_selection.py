"""Rows selected once per source content and settings, streamed, and reused by every later run."""

import hashlib
import json
import os
import random

import pytest

from bench.core import data
from bench.core.data import DataError, load_examples
from bench.sweep import selection
from bench.sweep.selection import Settings, select

FIRST_N = Settings(max_rows=3, shuffle_seed=None, on_bad_row="error", max_row_bytes=1_000_000)


def rows(n, start=0):
    return [{"instruction": f"问题{i}", "input": "", "output": f"回答{i}"} for i in range(start, start + n)]


@pytest.fixture
def opens(monkeypatch):
    """Every time a data file is opened for reading, by path: what "read the source once" counts."""
    counted = []
    real_open = open

    def counting_open(path, mode="r", *args, **kwargs):
        if "b" in mode and "r" in mode:
            counted.append(os.fspath(path))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(data, "open", counting_open, raising=False)
    monkeypatch.setattr(selection, "open", counting_open, raising=False)
    return counted


def test_two_runs_of_a_sweep_and_a_second_sweep_read_the_source_once(tmp_path, write_jsonl, opens):
    from bench.core.config import validate
    from bench.sweep.app import job_and_rows
    from tests.test_config import cfg

    train, held_out = write_jsonl(rows(50), "train.jsonl"), write_jsonl(rows(5, 100), "valid.jsonl")
    common = [f"dataset.path={train}", f"dataset.eval_path={held_out}", f"cache_dir={tmp_path}",
              "dataset.max_rows=10"]  # fmt: skip
    sweep = [validate(cfg(*common, f"framework={fw}")) for fw in ("trl", "llamafactory")]
    first, _ = job_and_rows(sweep[0], tmp_path / "0")
    second, picked = job_and_rows(sweep[1], tmp_path / "1")
    again, _ = job_and_rows(validate(cfg(*common, "train.seed=7")), tmp_path / "other-sweep")  # state is on disk
    assert opens.count(str(train)) == 1 and opens.count(str(held_out)) == 1
    assert not picked.source_read
    assert first.dataset.selection_sha256 == second.dataset.selection_sha256 == again.dataset.selection_sha256
    assert first.job_key() == second.job_key() == again.job_key()


def test_the_run_reads_the_selected_rows_in_order_and_the_counts_are_the_sources(tmp_path, write_jsonl):
    train = write_jsonl([*rows(2), rows(1)[0], *rows(3, 2)], "train.jsonl")  # row 3 repeats row 1
    picked = select(tmp_path, [train], [], FIRST_N)
    assert [ex.output for ex in load_examples([picked.train_file])] == ["回答0", "回答1", "回答2"]
    assert (picked.train.rows, picked.train.kept, picked.train.duplicates) == (4, 3, 1)
    assert picked.eval_file is None and picked.heldout is None


def test_first_n_stops_parsing_after_n_rows_yet_identifies_the_whole_file(tmp_path, write_jsonl):
    train = write_jsonl(rows(3), "train.jsonl")
    with open(train, "a", encoding="utf-8") as f:
        f.write("{not json\n")  # never parsed: the first 3 rows are enough
    picked = select(tmp_path, [train], [], FIRST_N)
    assert picked.train.rows == 3
    assert picked.source_sha256 == [hashlib.sha256(train.read_bytes()).hexdigest()]


def test_a_seeded_sample_is_the_same_rows_whatever_their_order_in_the_file(tmp_path, write_jsonl):
    settings = Settings(max_rows=5, shuffle_seed=42, on_bad_row="error", max_row_bytes=1_000_000)
    source = rows(40)
    a = select(tmp_path / "a", [write_jsonl(source, "a.jsonl")], [], settings)
    random.Random(0).shuffle(source)
    b = select(tmp_path / "b", [write_jsonl(source, "b.jsonl")], [], settings)
    assert a.sha256 == b.sha256
    picked = [ex.output for ex in load_examples([a.train_file])]
    # blake2b keyed by the seed over each row's content: these rows, in this order, on every machine
    assert picked == ["回答12", "回答13", "回答27", "回答22", "回答8"]
    assert selection.keyed_order(data.digest(data.Example("a", "", "b")), 42) == 9135011821007382843
    other = select(tmp_path / "c", [write_jsonl(rows(40), "c.jsonl")], [], Settings(5, 7, "error", 1_000_000))
    assert other.sha256 != a.sha256


def test_a_seeded_sample_counts_duplicates_over_the_whole_source(tmp_path, write_jsonl):
    train = write_jsonl([*rows(30), *rows(4), *rows(2)], "train.jsonl")
    picked = select(tmp_path, [train], [], Settings(5, 1, "error", 1_000_000))
    assert (picked.train.rows, picked.train.kept, picked.train.duplicates) == (36, 5, 6)
    assert len({ex.output for ex in load_examples([picked.train_file])}) == 5


def test_held_out_rows_that_are_training_rows_are_found_by_digest(tmp_path, write_jsonl):
    train = write_jsonl(rows(10), "train.jsonl")
    held_out = write_jsonl([*rows(2, 1), *rows(1, 50), *rows(1, 50)], "valid.jsonl")
    picked = select(tmp_path, [train], [held_out], Settings(None, None, "error", 1_000_000))
    assert (picked.heldout.kept, picked.heldout.duplicates, picked.heldout.overlap_with_train) == (3, 1, 2)
    assert [ex.output for ex in load_examples([picked.eval_file])] == ["回答1", "回答2", "回答50"]


def test_a_source_rewritten_in_place_is_hashed_again_even_with_its_old_size_and_mtime(tmp_path, write_jsonl):
    """The digest cache is keyed by path, inode, size, mtime and ctime: putting the mtime back does not hide an
    edit, since ctime moves with it."""
    train = write_jsonl(rows(3), "train.jsonl")
    before = select(tmp_path, [train], [], FIRST_N)
    st = train.stat()
    train.write_text(train.read_text(encoding="utf-8").replace("回答1", "回答9"), encoding="utf-8")  # same size
    os.utime(train, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = select(tmp_path, [train], [], FIRST_N)
    assert after.source_read and after.sha256 != before.sha256
    assert [ex.output for ex in load_examples([before.train_file])] == ["回答0", "回答1", "回答2"]  # kept as made


def test_a_source_that_changes_while_it_is_read_is_refused(tmp_path, write_jsonl, monkeypatch):
    train = write_jsonl(rows(3), "train.jsonl")
    real_stat, calls = selection._stat, []

    def moving_stat(path):
        calls.append(path)
        return (*real_stat(path)[:-1], len(calls))  # a different ctime on every look

    monkeypatch.setattr(selection, "_stat", moving_stat)
    with pytest.raises(DataError, match=r"train.jsonl: changed while it was read"):
        select(tmp_path, [train], [], FIRST_N)
    assert not (tmp_path / "selections").exists() and not (tmp_path / "requests").exists()


def test_a_bad_row_leaves_nothing_in_the_cache(tmp_path, write_jsonl):
    train = write_jsonl([*rows(2), {"instruction": "q"}], "train.jsonl")
    with pytest.raises(DataError, match=r"train.jsonl:3: field 'output' is missing"):
        select(tmp_path / "cache", [train], [], Settings(None, None, "error", 1_000_000))
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]


def test_a_selection_is_named_by_its_content_and_read_only(tmp_path, write_jsonl):
    picked = select(tmp_path, [write_jsonl(rows(3), "train.jsonl")], [], FIRST_N)
    h = hashlib.sha256()
    body = picked.train_file.read_bytes()
    h.update(f"{selection.TRAIN}\0{len(body)}\0".encode())
    h.update(body)
    assert picked.directory.name == picked.sha256 == h.hexdigest()
    assert not os.access(picked.train_file, os.W_OK) or os.geteuid() == 0  # root writes anyway
    assert picked.train_file.stat().st_mode & 0o222 == 0
    assert not [p for p in picked.directory.parent.iterdir() if p.name.startswith(".tmp-")]


# Bad input, found at streaming speed: one line naming file, row and what to do


def test_a_truncated_last_line_is_named_as_such(tmp_path, write_jsonl):
    path = write_jsonl(rows(3), "train.jsonl")
    path.write_bytes(path.read_bytes()[:-4])  # the last row cut mid-answer, no newline
    with pytest.raises(DataError, match=r"train.jsonl:3: not valid JSON .*the last line has no newline: is the file "
                       r"truncated\?; to leave such rows out"):  # fmt: skip
        select(tmp_path, [path], [], Settings(None, None, "error", 1_000_000))


def test_a_non_utf8_byte_deep_in_the_file_names_its_line(tmp_path, write_jsonl):
    path = write_jsonl(rows(1000), "train.jsonl")
    lines = path.read_bytes().splitlines(keepends=True)
    lines[700] = lines[700].replace("回答".encode(), b"\xb8\xb4")  # GBK bytes in a UTF-8 file
    path.write_bytes(b"".join(lines))
    with pytest.raises(DataError, match=r"train.jsonl:701: not UTF-8 text \(byte \d+ of the line\); save it as "
                       r"UTF-8; to leave such rows out"):  # fmt: skip
        select(tmp_path, [path], [], Settings(None, None, "error", 1_000_000))


def test_a_row_that_is_not_an_object_names_its_line(tmp_path, write_jsonl):
    path = write_jsonl([*rows(5), ["a", "list"], *rows(2, 5)], "train.jsonl")
    with pytest.raises(DataError, match=r"train.jsonl:6: row is a list, expected an object"):
        select(tmp_path, [path], [], Settings(None, None, "error", 1_000_000))


def test_a_single_line_far_above_the_row_bound_is_refused_without_reading_it_whole(tmp_path, monkeypatch):
    path = tmp_path / "one-line.jsonl"
    with open(path, "wb") as f:
        for _ in range(64):  # 64 MB on one line
            f.write(b"x" * (1 << 20))
    reads = []
    real = data._Hashed.readinto
    monkeypatch.setattr(data._Hashed, "readinto", lambda self, b: reads.append(real(self, b)) or reads[-1])
    limit = data.row_json_limit(1000)
    with pytest.raises(DataError, match=rf"one-line.jsonl:1: row larger than dataset.max_row_bytes \(its line is "
                       rf"over {limit:,} bytes\); set dataset.max_row_bytes=<larger>, or to leave"):  # fmt: skip
        select(tmp_path / "cache", [path], [], Settings(None, None, "error", 1000))
    assert sum(reads) <= 2 * (1 << 20)  # one buffer or two, not the file


def test_a_skipped_overlong_line_is_passed_and_the_next_rows_are_read(tmp_path, write_jsonl):
    path = tmp_path / "train.jsonl"
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows(2))
    path.write_text(body + "x" * 300_000 + "\n" + body.replace("问题", "Q"), encoding="utf-8")
    picked = select(tmp_path / "cache", [path], [], Settings(None, None, "skip", 1000))
    assert (picked.train.rows, picked.train.kept) == (5, 4)
    assert picked.train.skipped == {"row larger than dataset.max_row_bytes": 1}


def test_a_json_array_is_streamed_and_its_element_bound_holds(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text(json.dumps(rows(4), ensure_ascii=False), encoding="utf-8")
    picked = select(tmp_path / "cache", [path], [], FIRST_N)
    assert [ex.output for ex in load_examples([picked.train_file])] == ["回答0", "回答1", "回答2"]
    big = tmp_path / "big.json"
    big.write_text(json.dumps([*rows(2), {"instruction": "q", "output": "x" * 3_000_000}]), encoding="utf-8")
    with pytest.raises(DataError, match=r"big.json: row 3: row larger than dataset.max_row_bytes .*convert the file "
                       r"to JSON Lines"):  # fmt: skip
        select(tmp_path / "cache", [big], [], Settings(None, None, "error", 1000))


def test_parquet_is_read_by_batch_and_a_missing_column_names_the_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows(10)), tmp_path / "train.parquet", row_group_size=4)
    picked = select(tmp_path / "cache", [tmp_path / "train.parquet"], [], FIRST_N)
    assert [ex.output for ex in load_examples([picked.train_file])] == ["回答0", "回答1", "回答2"]
    assert picked.source_sha256 == [hashlib.sha256((tmp_path / "train.parquet").read_bytes()).hexdigest()]
    pq.write_table(pa.Table.from_pylist([{"instruction": "q", "input": ""}]), tmp_path / "no-output.parquet")
    with pytest.raises(DataError, match=r"no-output.parquet:1: field 'output' is missing"):
        select(tmp_path / "cache", [tmp_path / "no-output.parquet"], [], FIRST_N)
