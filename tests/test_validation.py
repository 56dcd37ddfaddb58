"""Prediction validation: every bad output is named precisely."""

from __future__ import annotations

import numpy as np
import pytest

from itbench.errors import SubmissionError
from itbench.harness.runcore import validate_predictions


@pytest.mark.parametrize(
    "pred, message",
    [
        ({"a": 1}, "are a dict, not an array"),
        (np.array([["a", "b"]] * 4), "dtype <U1, not numbers"),
        (np.zeros((4, 3)), r"shape \(4, 3\), expected \(4, 2\)"),
        (np.zeros((3, 2)), r"shape \(3, 2\), expected \(4, 2\)"),
        (np.zeros((4, 2, 1)), r"shape \(4, 2, 1\)"),
        (np.array([[np.nan, 0]] * 4), "4 NaN and 0 inf values \\(in 1 neuroids\\)"),
        (np.array([[np.inf, -np.inf]] * 4), "0 NaN and 8 inf values \\(in 2 neuroids\\)"),
    ],
)
def test_bad_predictions(pred, message):
    with pytest.raises(SubmissionError, match=message) as info:
        validate_predictions(pred, 4, 2, "mysub")
    assert "submission 'mysub'" in str(info.value)
    assert "(4, 2)" in str(info.value)  # the hint says what is expected


def test_good_predictions_become_float64():
    out = validate_predictions(np.ones((4, 2), dtype=np.float16), 4, 2, "s")
    assert out.dtype == np.float64 and out.shape == (4, 2)
    assert validate_predictions(np.ones((4, 2), dtype=np.int32), 4, 2, "s").dtype == np.float64
