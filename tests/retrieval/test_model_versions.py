"""The accept rule both trainers share: better than the current model by more than the noise."""

import math

from retrieval.training.protocol import clearly_better


def test_clearly_better_needs_a_gain_above_one_standard_error():
    better, gain, se = clearly_better([1, 1, 0, 1], [0, 1, 0, 0])
    assert better and gain == 0.5 and math.isclose(se, math.sqrt(1 / 3) / 2)
    # A gain made of wins and losses that nearly cancel: within the noise.
    assert not clearly_better([1, 0, 1, 0, 1, 0, 1, 1], [0, 1, 0, 1, 0, 1, 0, 0])[0]
    assert not clearly_better([0.5, 0.5], [0.5, 0.5])[0]  # no gain
    assert not clearly_better([0.1, 0.0], [0.0, 0.2])[0]  # a loss
    assert clearly_better([], []) == (False, 0.0, 0.0)
    # With a minimum effect: the same gain is refused when it is below that share of the old mean.
    assert clearly_better([1.01, 1.01], [1.0, 1.0])[0]
    assert not clearly_better([1.01, 1.01], [1.0, 1.0], min_relative=0.02)[0]
