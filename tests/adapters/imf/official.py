"""What the iMF and pMF tests (tests/adapters/imf, tests/adapters/pmf) do with the official code:
github:Lyy-iiis/imeanflow and github:Lyy-iiis/pMF share one sampler API (``generate(n, rng, num_steps,
omega, t_min, t_max, labels=...)``) and one README/evaluate.py layout. Test modules import it
relatively (``from ..imf.official import ...``).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from adapters import load_sampler

from ..checkpoint_files import save

# The sampler settings both families are compared on: name -> (guidance g = omega - 1 or None, interval or None).
SETTINGS = {
    "no guidance, full interval": (0.0, (0.0, 1.0)),
    "guided, full interval": (4.0, (0.0, 1.0)),
    "guided, interval": (4.0, (0.3, 0.7)),
    "config defaults": (None, None),
}


class FixedNoise:
    """Stands in for the reference's per-sample generator: hands out the noise the adapter gets."""

    def __init__(self, noise):
        self.noise = noise

    def randn(self, shape):
        assert tuple(shape) == tuple(self.noise.shape)
        return self.noise.clone()


def rel_dev(ours, ref) -> float:
    """max |ours - ref| / max |ref|."""
    return float((ours - ref).abs().max() / ref.abs().max())


def reference_sample(reference, z, labels, num_steps, omega, t_min, t_max):
    """The reference's ``generate`` from the noise `z` (N, C, H, W), guided by omega on [t_min, t_max]."""
    return reference.generate(len(z), FixedNoise(z), num_steps, omega, t_min, t_max, labels=labels)


def samples_of_setting(reference, s, z, labels, num_steps, setting):
    """(the reference's sample, the sampler `s`'s) of `SETTINGS[setting]`: the config's guidance or
    interval where the setting gives None, omega = 1 + g for the reference."""
    g, interval = SETTINGS[setting]
    omega = 1.0 + (s.config.guidance if g is None else g)
    t_min, t_max = (s.config.interval_min, s.config.interval_max) if interval is None else interval
    ref = reference_sample(reference, z, labels, num_steps, omega, t_min, t_max)
    return ref, s.generate(z, labels, guidance=g, guidance_interval=interval, num_steps=num_steps)


def bfloat16_deviation(s, overrides: dict, tmp_path, z, labels, **options) -> float:
    """The sampler `s` (built with `overrides`) reloaded in bfloat16 from its own saved weights, run on
    `z` with `options`, against `s` in float32: the relative deviation; the bfloat16 sample is
    checked to be bfloat16."""
    half = load_sampler(s.info.name, checkpoint=save(tmp_path, s.net.state_dict(), "f32.pt"), dtype=torch.bfloat16,
                        **overrides)
    out = half.generate(z, labels, **options)
    assert out.dtype == torch.bfloat16
    return rel_dev(out.float(), s.generate(z, labels, **options))


def flops_per_sample(net, n: int = 2) -> float:
    """FlopCounterMode's count of one forward of `net` (built on the meta device) per sample."""
    with torch.device("meta"):
        side = net.grid * net.patch_size
        x = torch.empty(n, net.in_channels, side, side)
        t, y = torch.ones(n), torch.zeros(n, dtype=torch.long)
    with FlopCounterMode(display=False) as counter:
        net(x, t, t, t, t, t, y)
    return counter.get_total_flops() / n


def root(module) -> Path:
    """The folder of an imported reference module."""
    return Path(module.__file__).parent


def readme_settings(module) -> list[tuple[str, int, tuple[float, float, float]]]:
    """(factory, num_steps, (omega, t_min, t_max)) of each ``evaluate.py evaluate`` command in the
    README's bash blocks, with evaluate.py's argparse defaults for the flags a command leaves out."""
    src = (root(module) / "evaluate.py").read_text()

    def default(flag):
        return re.search(rf"'--{flag}', default='?([\w.]+)'?", src).group(1)

    settings = []
    for block in re.findall(r"```bash\n(.*?)```", (root(module) / "README.md").read_text(), re.S):
        if "evaluate.py evaluate" not in block:
            continue

        def flag(name):
            m = re.search(rf"--{name} (\S+)", block)
            return m.group(1) if m else default(name)

        settings.append((flag("model"), int(flag("num-sampling-steps")),
                         tuple(float(flag(f)) for f in ("cfg-omega", "interval-min", "interval-max"))))
    return settings
