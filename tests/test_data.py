import json

import pytest

from bench.core.data import (
    BUNDLED_MEDICAL,
    DataError,
    Example,
    LoadCounts,
    load_examples,
    resolve_files,
    to_conversation,
)

ROW = {"instruction": "肺炎有什么症状？", "input": "", "output": "咳嗽、咳痰、发热、胸痛。"}


def test_bundled_sample_has_fixed_train_and_held_out_split():
    train = load_examples(resolve_files(BUNDLED_MEDICAL, "train*.json*"))
    held_out = load_examples(resolve_files(BUNDLED_MEDICAL, "valid*.json*"))
    assert len(train) >= 200 and len(held_out) >= 40
    assert not set(train) & set(held_out)
    assert any(ex.input for ex in train), "some rows carry an input"
    assert sum(any("\u4e00" <= c <= "\u9fff" for c in ex.output) for ex in train) > 0.8 * len(train)


def test_reads_jsonl_and_json_array_alike(tmp_path, write_jsonl):
    jsonl = write_jsonl([ROW, ROW | {"input": "男，45岁"}])
    array = tmp_path / "rows.json"
    array.write_text(json.dumps([ROW, ROW | {"input": "男，45岁"}], ensure_ascii=False), encoding="utf-8")
    assert load_examples([jsonl]) == load_examples([array])


def test_missing_input_field_means_empty_input(write_jsonl):
    path = write_jsonl([{"instruction": "a", "output": "b"}])
    assert load_examples([path]) == [Example("a", "", "b")]


def rows(n):
    return [{"instruction": f"问题{i}", "input": "", "output": f"回答{i}"} for i in range(n)]


def test_max_rows_stops_early(write_jsonl):
    path = write_jsonl(rows(5))
    assert [ex.output for ex in load_examples([path], max_rows=3)] == ["回答0", "回答1", "回答2"]


def test_user_turn_appends_input_on_a_new_line_only_when_present():
    assert Example("问题", "", "答").user_content == "问题"
    assert Example("问题", "病例", "答").user_content == "问题\n病例"


def test_conversation_is_system_and_user_prompt_with_assistant_completion():
    conv = to_conversation(Example("问题", "病例", "答案"), "SYS")
    assert conv == {
        "prompt": [{"role": "system", "content": "SYS"}, {"role": "user", "content": "问题\n病例"}],
        "completion": [{"role": "assistant", "content": "答案"}],
    }


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(DataError, match="nope.jsonl: dataset file not found"):
        resolve_files(tmp_path / "nope.jsonl", "*")


def test_not_json_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(ROW) + "\n{not json\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.jsonl:2: not valid JSON"):
        load_examples([path])


@pytest.mark.parametrize("field", ["instruction", "output"])
def test_row_without_required_field_names_row_and_field(write_jsonl, field):
    row = {k: v for k, v in ROW.items() if k != field}
    path = write_jsonl([ROW, row])
    with pytest.raises(DataError, match=rf"data.jsonl:2: field '{field}' is missing"):
        load_examples([path])


def test_empty_answer_is_rejected(write_jsonl):
    path = write_jsonl([ROW | {"output": "  "}])
    with pytest.raises(DataError, match=r"data.jsonl:1: field 'output' is empty"):
        load_examples([path])


def test_empty_file_is_rejected(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n", encoding="utf-8")
    with pytest.raises(DataError, match="empty.jsonl: file is empty"):
        load_examples([path])


def test_truncated_json_array_is_named(tmp_path):
    path = tmp_path / "cut.json"
    path.write_text(json.dumps([ROW, ROW], ensure_ascii=False)[:-20], encoding="utf-8")
    with pytest.raises(DataError, match=r"cut.json: row 2: not valid JSON .*is the file truncated\?"):
        load_examples([path])


@pytest.mark.parametrize("value, kind", [(42, "int"), (["a"], "list"), (None, "NoneType")])
def test_wrong_types_name_the_type(write_jsonl, value, kind):
    path = write_jsonl([ROW | {"output": value}])
    with pytest.raises(DataError, match=rf"data.jsonl:1: field 'output' is {kind}, expected a string"):
        load_examples([path])


def test_whitespace_only_instruction_is_empty(write_jsonl):
    path = write_jsonl([ROW | {"instruction": " \t\n"}])
    with pytest.raises(DataError, match=r"data.jsonl:1: field 'instruction' is empty"):
        load_examples([path])


def test_non_utf8_bytes_are_named(tmp_path):
    path = tmp_path / "gbk.jsonl"
    path.write_bytes(json.dumps(ROW, ensure_ascii=False).encode("gbk") + b"\n")
    with pytest.raises(DataError, match=r"gbk.jsonl:1: not UTF-8 text \(byte \d+ of the line\); save it as UTF-8"):
        load_examples([path])


def test_duplicates_are_counted_and_left_out(write_jsonl):
    report = LoadCounts()
    examples = load_examples([write_jsonl([ROW, ROW, ROW | {"input": "x"}, ROW])], report=report)
    assert len(examples) == 2 and report.duplicates == 2 and report.rows == 4


def test_skip_policy_counts_each_bad_row_by_its_problem(tmp_path):
    path = tmp_path / "mixed.jsonl"
    lines = [
        json.dumps(ROW, ensure_ascii=False),
        "{broken",
        json.dumps({"instruction": "q"}),
        json.dumps(ROW | {"output": ""}),
        json.dumps(ROW | {"output": 1, "instruction": "q2"}),
        json.dumps({"instruction": "q3", "output": "a"}),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = LoadCounts()
    examples = load_examples([path], on_bad_row="skip", report=report)
    assert len(examples) == 2 and report.kept == 2 and report.rows == 6
    assert report.skipped == {
        "not valid JSON (Expecting property name enclosed in double quotes)": 1,
        "field 'output' is missing": 1,
        "field 'output' is empty": 1,
        "field 'output' is int, expected a string": 1,
    }


def test_error_policy_names_the_broken_jsonl_line(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text(json.dumps(ROW) + "\n" + json.dumps(ROW | {"input": "b"}) + "\n{broken\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"mixed.jsonl:3: not valid JSON"):
        load_examples([path])


def test_parquet_files_load_like_json(tmp_path, write_jsonl):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [ROW, ROW | {"input": "病例"}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "train.parquet")
    assert load_examples([tmp_path / "train.parquet"]) == load_examples([write_jsonl(rows)])


def test_shibing624_medical_layout_is_read_from_a_local_copy(tmp_path):
    finetune = tmp_path / "medical" / "finetune"
    finetune.mkdir(parents=True)
    for name, n in [("train_zh_0.json", 5), ("valid_zh_0.json", 2), ("test_zh_0.json", 2), ("train_en_1.json", 3)]:
        (finetune / name).write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows(n)), encoding="utf-8"
        )
    train = resolve_files(finetune, "train_zh*.json*")
    held_out = resolve_files(finetune, "valid_zh*.json*")
    assert [p.name for p in train] == ["train_zh_0.json"] and [p.name for p in held_out] == ["valid_zh_0.json"]
    assert len(load_examples(train)) == 5


def test_a_path_that_is_no_data_file_says_what_it_is(tmp_path):
    import os

    os.mkfifo(tmp_path / "pipe.jsonl")
    (tmp_path / "loop.jsonl").symlink_to(tmp_path / "loop.jsonl")
    (tmp_path / "broken.jsonl").symlink_to(tmp_path / "nowhere.jsonl")
    with pytest.raises(DataError, match="pipe.jsonl: a FIFO, not a dataset file"):
        resolve_files(tmp_path / "pipe.jsonl", "*")
    with pytest.raises(DataError, match="loop.jsonl: a symlink loop, not a dataset file"):
        resolve_files(tmp_path / "loop.jsonl", "*")
    with pytest.raises(DataError, match=r"broken.jsonl: dataset file not found \(a broken symlink\)"):
        resolve_files(tmp_path / "broken.jsonl", "*")


def test_strict_mode_with_no_answer_token_left_says_so():
    from bench.worker.runners.base import RunContext
    from tests.conftest import make_spec

    ctx = RunContext(spec=make_spec(max_seq_len=4), model_path="", examples=[], callbacks=[], on_gpu=False,
                     precision="fp32")  # fmt: skip
    ctx._tokenized = [{"input_ids": [1, 2, 3, 4, 5, 6], "completion_mask": [0, 0, 0, 0, 1, 1]}] * 3
    with pytest.raises(DataError, match=r"0 usable rows: all 3 rows have no answer token within train.max_seq_len=4"):
        ctx.pretokenized()


def test_every_row_cut_before_its_answer_stops_before_training_in_the_frameworks_own_tokenization_too():
    """dataset.tokenize=framework: the worker counts with the harness's tokenizer before calling the framework,
    instead of the framework's own failure on an empty dataset (num_samples=0)."""
    from bench.worker.runners.base import RunContext
    from tests.conftest import make_spec

    def ctx(**train):
        c = RunContext(spec=make_spec(**train), model_path="", examples=[], callbacks=[], on_gpu=False,
                       precision="fp32")  # fmt: skip
        c._tokenized = [{"input_ids": [1, 2, 3, 4, 5, 6], "completion_mask": [0, 0, 0, 0, 1, 1]}] * 3
        return c

    with pytest.raises(DataError, match=r"0 usable rows: all 3 rows have no answer token within train.max_seq_len=4"):
        ctx(max_seq_len=4).check_usable()
    ctx(max_seq_len=5).check_usable()  # one answer token left: usable
    ctx(max_seq_len=4, loss_on="all").check_usable()  # every token trains
    ctx(max_seq_len=4, packing="padding_free").check_usable()  # rows are not cut


def test_a_held_out_split_that_repeats_training_rows_gets_a_warning():
    from bench.core.data import heldout_note

    note = heldout_note({"kept": 40, "overlap_with_train": 31})
    assert note == "quality is recall: 31 of 40 held-out rows are also training rows"
    assert heldout_note({"kept": 40, "overlap_with_train": 2}) is None  # 5 %: at the threshold, no warning
    assert heldout_note({"kept": 0, "overlap_with_train": 0}) is None
