"""BiFlow's training pairs and objective, checked against the teacher's own sampler."""

import pytest
import torch

from adapters import load_sampler
from adapters.biflow.model import AlignmentHeads
from adapters.biflow.train import distill_objective, make_pairs
from adapters.layers import unpatchify


@pytest.fixture(scope="module")
def teacher():
    s = load_sampler("tarflow-mini")
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # a non-trivial flow: random affine outputs instead of the zeroed identity
        for block in s.net.blocks:
            block.proj_out.weight.copy_(0.05 * torch.randn(block.proj_out.weight.shape, generator=gen))
    return s


@pytest.fixture(scope="module")
def pairs(teacher):
    x, y = torch.rand(12, 3, 8, 8) * 2 - 1, torch.arange(12) % 10
    return x, make_pairs(teacher, x, y, draws=2, scales=(0.0, 1.5), seed=0)


def test_pairs_at_guidance_zero_invert_the_teacher_and_target_the_clean_image(teacher, pairs):
    x, p = pairs
    i = (p.guidance == 0).nonzero().squeeze(1)
    assert 0 < len(i) < len(p)
    # The teacher's own sampler, from the pair's noise, lands on the noisy image whose
    # tokens are the last aligned state; the target is the clean image.
    back = teacher.generate(p.noise[i], p.labels[i], guidance=0.0, denoise=False)
    torch.testing.assert_close(back, unpatchify(p.states[-1][i], 2, (8, 8)), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(p.target[i], x.repeat(2, 1, 1, 1)[i])
    assert (back - p.target[i]).abs().max() > 0.05  # noisy vs clean: the denoising is learned


def test_guided_pairs_target_the_teachers_guided_denoised_sample(teacher, pairs):
    _, p = pairs
    i = (p.guidance == 1.5).nonzero().squeeze(1)
    want = teacher.generate(p.noise[i], p.labels[i], guidance=1.5, denoise=True)
    torch.testing.assert_close(p.target[i], want, atol=1e-4, rtol=1e-4)
    first = teacher.net.blocks[-1].reverse(p.noise[i].unfold(2, 2, 2).unfold(3, 2, 2).permute(0, 2, 3, 1, 4, 5)
                                           .reshape(len(i), 16, 12), p.labels[i], 1.5)
    torch.testing.assert_close(p.states[0][i], first, atol=1e-5, rtol=1e-5)  # stage 0: block B-1 undone


def test_objective_is_reconstruction_plus_alignment(pairs):
    _, p = pairs
    student = load_sampler("biflow-mini")
    heads = AlignmentHeads.for_net(student.net)
    with_align = distill_objective(student.net, heads, p, align_weight=1.0)(torch.Generator().manual_seed(0), 8)
    without = distill_objective(student.net, heads, p, align_weight=0.0)(torch.Generator().manual_seed(0), 8)
    gen = torch.Generator().manual_seed(0)
    idx = torch.randint(0, len(p), (8,), generator=gen)
    out, stages = student.net(p.noise[idx], p.labels[idx], p.guidance[idx], return_stages=True)
    torch.testing.assert_close(without, (out - p.target[idx]).pow(2).mean())
    align = sum((h - s[idx]).pow(2).mean() for h, s in zip(heads(stages), p.states)) / len(stages)
    torch.testing.assert_close(with_align, without + align)


def test_a_student_with_other_stage_count_is_refused(pairs):
    _, p = pairs
    student = load_sampler("biflow-mini", num_stages=2)
    with pytest.raises(ValueError, match="4 blocks, the student 2 stages"):
        distill_objective(student.net, AlignmentHeads.for_net(student.net), p)
