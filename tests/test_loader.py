import torch

from gradlab.data import Augment, Dataset
from gradlab.data.loader import DeviceLoader, crop_and_flip, normalize


def toy_dataset(n=10, augment=Augment()):
    x = torch.arange(n * 1 * 4 * 4, dtype=torch.int64).remainder(251).to(torch.uint8).view(n, 1, 4, 4)
    return Dataset("toy", x, torch.arange(n), x[:2], torch.arange(2), 10, augment)


def test_crop_without_offset_shift_is_identity_and_shift_moves_pixels():
    x = torch.arange(2 * 1 * 3 * 3, dtype=torch.uint8).view(2, 1, 3, 3)
    centre = torch.tensor([1, 1])
    assert torch.equal(crop_and_flip(x, 1, centre, centre, None), x)
    # offset (0, 0) on a 1-padded image: the window starts one pixel up-left of the image
    out = crop_and_flip(x, 1, torch.tensor([0, 2]), torch.tensor([0, 2]), None)
    assert out[0, 0, 0].tolist() == [0, 0, 0] and out[0, 0, 1].tolist() == [0, 0, 1]
    assert out[0, 0, 2].tolist() == [0, 3, 4]
    assert out[1, 0, 0].tolist() == [13, 14, 0] and out[1, 0, 2].tolist() == [0, 0, 0]


def test_flip_mirrors_only_selected_images():
    x = torch.arange(2 * 1 * 2 * 3, dtype=torch.uint8).view(2, 1, 2, 3)
    out = crop_and_flip(x, 0, None, None, torch.tensor([True, False]))
    assert torch.equal(out[0], x[0].flip(2)) and torch.equal(out[1], x[1])


def test_normalize_matches_torchvision_formula():
    x = torch.tensor([[[[0, 255]], [[51, 102]]]], dtype=torch.uint8)
    mean, std = torch.tensor([0.5, 0.2]), torch.tensor([0.25, 0.1])
    expected = (x.float() / 255 - mean.view(1, 2, 1, 1)) / std.view(1, 2, 1, 1)
    torch.testing.assert_close(normalize(x, mean, std), expected)


def test_batches_are_a_function_of_seed_and_step():
    ds = toy_dataset(augment=Augment(pad=1, flip=True))
    a = DeviceLoader(ds, 3, seed=7, device=torch.device("cpu"))
    b = DeviceLoader(ds, 3, seed=7, device=torch.device("cpu"))
    seq = [a.batch(s) for s in range(9)]
    # a fresh loader jumping straight to step 7 (as after a resume) sees the same batch
    x7, y7 = b.batch(7)
    assert torch.equal(x7, seq[7][0]) and torch.equal(y7, seq[7][1])
    c = DeviceLoader(ds, 3, seed=8, device=torch.device("cpu"))
    assert not all(torch.equal(c.batch(s)[1], seq[s][1]) for s in range(3))


def test_each_epoch_is_a_permutation_without_replacement():
    ds = toy_dataset(n=12)
    loader = DeviceLoader(ds, 4, seed=0, device=torch.device("cpu"))
    assert loader.steps_per_epoch == 3
    for epoch in range(2):
        labels = torch.cat([loader.batch(epoch * 3 + i)[1] for i in range(3)])
        assert sorted(labels.tolist()) == list(range(12))


def test_batch_larger_than_dataset_is_an_error():
    import pytest

    from gradlab.errors import DataError

    with pytest.raises(DataError, match="--batch-size 10 or less"):
        DeviceLoader(toy_dataset(n=10), 11, seed=0, device=torch.device("cpu"))
