"""The evaluator's scores on fixed predictions, checked by hand."""

import pytest

from bench.worker.evaluate import CharTokenizer, bleu4, rouge_l_each


def test_chinese_is_scored_character_by_character():
    assert CharTokenizer().tokenize("咳嗽 发热") == ["咳", "嗽", "发", "热"]


def test_rouge_l_of_a_prediction_that_is_part_of_the_reference():
    # reference 咳嗽、发热、胸痛 has 8 characters; the prediction's 4 are its longest common subsequence:
    # precision 4/4, recall 4/8, F1 = 2 * 1 * 0.5 / 1.5
    assert rouge_l_each(["咳嗽发热"], ["咳嗽、发热、胸痛"]) == [pytest.approx(2 / 3)]


def test_rouge_l_is_scored_per_prompt():
    # abed vs abcd: LCS abd, P = R = 3/4; identical pair scores 1
    assert rouge_l_each(["abed", "胸痛"], ["abcd", "胸痛"]) == [pytest.approx(0.75), 1.0]


def test_bleu4_bounds():
    same = "建议到消化内科就诊，完善胃镜检查。"
    assert bleu4([same], [same])[0] == pytest.approx(1.0)
    assert bleu4(["天气晴朗"], ["咳嗽发热需就医"]) == (0.0, 0)


def test_bleu4_says_when_no_four_gram_matched():
    # Bigrams match, no 4-gram does: sacrebleu's smoothing still gives a score above zero.
    score, matches = bleu4(["咳嗽发热头痛乏力"], ["咳嗽乏力发热头晕"])
    assert matches == 0 and score > 0


def test_bleu4_rewards_closer_answers():
    ref = ["建议到消化内科就诊，完善胃镜检查，少食多餐。"]
    close = bleu4(["建议到消化内科就诊，完善胃镜检查。"], ref)[0]
    far = bleu4(["建议多喝水，注意休息。"], ref)[0]
    assert 1.0 > close > far >= 0.0
