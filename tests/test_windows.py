"""The window rule (docs/behaviour.md §1): frame t's window of k frames is t - floor(k/2) ... t + ceil(k/2) - 1."""
import pytest

from utils.windows import EVAL_FRAMES, TRAIN_FRAMES, window_centre, window_indices, window_sources


def test_training_pairs_are_the_previous_and_the_current_frame():
    assert window_indices(3, 7, TRAIN_FRAMES) == [2, 3]
    assert window_centre(TRAIN_FRAMES) == 1  # the pair's second frame is frame t


def test_evaluation_windows_are_centred_on_the_frame():
    assert window_indices(3, 7, EVAL_FRAMES) == [1, 2, 3, 4, 5]
    assert window_centre(EVAL_FRAMES) == 2


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 6])
def test_loaders_and_post_processing_agree_inside_the_video_and_differ_only_in_the_fill(k):
    """Loaders repeat the end frame at a clipped position; post-processing fills it with the centre, invalid."""
    n = 4
    source, valid = window_sources(n, k)
    for t in range(n):
        loaded = window_indices(t, n, k)
        assert loaded[window_centre(k)] == t
        for j in range(k):
            assert source[t, j].item() == (loaded[j] if valid[t, j] else t)
