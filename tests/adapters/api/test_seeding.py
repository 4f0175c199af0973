import torch

from adapters.api.seeding import sample_labels, sample_noise


def test_noise_depends_only_on_seed_and_index():
    whole = sample_noise(3, range(10), (4, 8, 8))  # (10, 4, 8, 8)
    pieces = torch.cat([sample_noise(3, range(0, 4), (4, 8, 8)), sample_noise(3, range(4, 10), (4, 8, 8))])
    assert torch.equal(whole, pieces)
    assert torch.equal(sample_noise(3, [7, 2], (4, 8, 8)), whole[[7, 2]])


def test_noise_differs_across_seeds_and_indices_and_is_standard_normal():
    a = sample_noise(0, range(64), (16, 16))
    assert not torch.equal(a, sample_noise(1, range(64), (16, 16)))
    assert not torch.equal(a[0], a[1])
    # 16384 standard-normal draws: mean within 4 standard errors of 0, variance of 1.
    assert abs(float(a.mean())) < 4 / 128
    assert abs(float(a.var()) - 1) < 0.05


def test_labels_balanced_and_resumable():
    labels = sample_labels(5, range(30), 10)  # three full blocks of ten classes
    assert torch.equal(torch.bincount(labels, minlength=10), torch.full((10,), 3))
    assert torch.equal(sample_labels(5, range(13, 27), 10), labels[13:27])
    assert not torch.equal(labels, sample_labels(6, range(30), 10))


def test_unconditional_has_no_labels():
    assert sample_labels(0, range(4), 0) is None
