"""The worker's own verdicts on what the framework did: a step-1 loss that cannot be real, a layout that is not
the one the job asked for."""

import math

import pytest

from bench.worker.main import check_first_loss, check_layout
from tests.conftest import make_spec


@pytest.mark.parametrize("loss, word", [(0.0, "is 0"), (math.nan, "nan"), (math.inf, "inf")])
def test_a_zero_or_nan_step1_loss_fails_the_run(loss, word):
    assert word in check_first_loss(loss)


def test_a_real_step1_loss_passes():
    assert check_first_loss(6.11) is None and check_first_loss(None) is None


def test_a_framework_that_packs_on_its_own_fails_an_unpacked_job():
    reason = check_layout(make_spec(packing="none"), {"rows": 4, "sequences": 16})
    assert "train.packing=none" in reason and "16 sequences in 4 rows" in reason
    assert check_layout(make_spec(packing="none"), {"rows": 4, "sequences": 4}) is None


def test_a_framework_that_ignores_a_packing_request_fails_the_run():
    assert "not packed" in check_layout(make_spec(packing="packed"), {"rows": 8, "sequences": 8})
    assert check_layout(make_spec(packing="padding_free"), {"rows": 2, "sequences": 8}) is None
    assert check_layout(make_spec(packing="packed", batch_size=1), {"rows": 8, "sequences": 8}) is None
