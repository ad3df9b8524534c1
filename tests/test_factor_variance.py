"""docs/factor_variance.py's R^2, against a case worked by hand."""

import importlib.util
from pathlib import Path

import numpy as np

_spec = importlib.util.spec_from_file_location("factor_variance", Path(__file__).parents[1] / "docs" / "factor_variance.py")
factor_variance = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(factor_variance)


def test_r_squared_by_hand():
    # column 0: group means 1.5 and 3.5 around 2.5 -> between 4 of total 5; column 1: constant within groups
    y = np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 1.0], [4.0, 1.0]])
    r2 = factor_variance.r_squared(y, np.array(["a", "a", "b", "b"]))
    np.testing.assert_allclose(r2, [0.8, 1.0])
    # one level explains nothing; a constant column has no variance to explain
    assert factor_variance.r_squared(y[:, :1], np.array(["a"] * 4))[0] == 0.0
    assert np.isnan(factor_variance.r_squared(np.ones((4, 1)), np.array(["a", "a", "b", "b"]))[0])
