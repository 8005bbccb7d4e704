"""Test-time augmentation's views (nn.mnist.modelfile.tta_views, predict_proba); the evaluate
stage's use of them: tests/test_train_stages.py."""

import numpy as np
import pytest

from nn.augment import affine_view
from nn.layers import Tiles
from nn.mnist.modelfile import normalize, predict_proba, tta_views

NORM = {"mean": 0.1, "std": 0.3}


@pytest.mark.parametrize("shift, rotate, scale, n", [(0, 0, 0, 1), (1, 0, 0, 9), (2, 0, 0, 25),
                                                     (0, 5, 0, 3), (1, 5, 0, 27), (1, 0, 0.1, 27),
                                                     (1, 5, 0.1, 81)])
def test_the_views_are_every_shift_at_every_rotation_and_size(shift, rotate, scale, n):
    views = tta_views(shift, rotate, scale)
    assert len(views) == len(set(views)) == n and (0, 0, 0.0, 1.0) in views
    assert {v[2] for v in views} == ({0.0, -rotate, rotate} if rotate else {0.0})
    assert {v[3] for v in views} == ({1.0, 1 - scale, 1 + scale} if scale else {1.0})
    assert max(abs(v[0]) for v in views) == max(abs(v[1]) for v in views) == shift


class Recorder:
    """A stand-in network that keeps what it is asked to score and answers uniform odds."""

    def __init__(self, first):
        self.layers, self.seen = [first], []

    def predict_proba(self, x):
        self.seen.append(x.copy())
        return np.full((len(x), 4), 0.25, np.float32)


def pair_with_ink_at_the_seam():
    """A 28x56 pair: background right tile; the left tile's last column inked."""
    images = np.zeros((3, 28, 56), np.uint8)
    images[:, 10:18, 27] = 255
    return images


def test_a_tiles_network_sees_each_digit_moved_about_its_own_centre():
    """Each view of a pair is its two digits' own views put side by side: a shift right pushes
    the left digit's last column out of its tile, never into the right digit's, and a rotation
    turns each digit about its own centre."""
    images = pair_with_ink_at_the_seam()
    net = Recorder(Tiles(2))
    predict_proba(net, images, NORM, tta_shift=1, tta_rotate=10)
    assert len(net.seen) == 27
    background = normalize(np.zeros((1, 1, 1), np.uint8), NORM)[0, 0, 0, 0]
    x = normalize(images, NORM)
    for view, seen in zip(tta_views(1, 10), net.seen):
        left = affine_view(x[:, :, :28], *view, background)
        right = affine_view(x[:, :, 28:], *view, background)
        np.testing.assert_array_equal(seen, np.concatenate([left, right], axis=2))
        assert (seen[:, :, 28:] == background).all()  # the right digit stays blank


def test_a_network_without_tiles_sees_the_whole_image_moved():
    images = pair_with_ink_at_the_seam()
    net = Recorder(None)
    predict_proba(net, images, NORM, tta_shift=1)
    moved_right = net.seen[tta_views(1).index((0, 1, 0.0, 1.0))]
    assert (moved_right[:, 10:18, 28] > 0).all()  # the ink crossed the middle
    assert len(net.seen) == 9


def test_the_mean_over_views_is_returned():
    class Counter(Recorder):
        def predict_proba(self, x):
            self.seen.append(None)
            p = np.zeros((len(x), 2))
            p[:, len(self.seen) % 2] = 1  # alternate views vote for class 0 and class 1
            return p

    p = predict_proba(Counter(None), np.zeros((2, 8, 8), np.uint8), NORM, tta_rotate=3)
    np.testing.assert_allclose(p, [[1 / 3, 2 / 3]] * 2)
