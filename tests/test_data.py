import json

import pytest

from bench.data import BUNDLED_MEDICAL, DataError, Example, load_examples, resolve_files, to_conversation

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


def test_max_rows_stops_early(write_jsonl):
    path = write_jsonl([ROW] * 5)
    assert len(load_examples([path], max_rows=3)) == 3


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


def test_wrong_type_names_the_field(write_jsonl):
    path = write_jsonl([ROW | {"output": 42}])
    with pytest.raises(DataError, match=r"data.jsonl:1: field 'output' is int, expected a string"):
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
