import sys
import textwrap

import pytest
import torch

from adapters import ENTRY_POINT_GROUP, list_models, load_sampler, model_info
from adapters.api import registry
from adapters.api.errors import InputError
from adapters.api.sampler import Sampler

EXPECTED_IDS = {
    "tarflow", "tarflow-afhq256", "tarflow-imagenet64", "tarflow-imagenet128", "itarflow-b2", "itarflow-xl2",
    "biflow-b2", "biflow-xl2", "meanflow-b2", "meanflow-xl2", "rf-mini",
    "sit-b2", "sit-l2", "sit-xl2", "imf-b2", "imf-m2", "imf-l2", "imf-xl2",
    "pmf-b16", "pmf-l16", "pmf-h16", "pmf-b32", "pmf-l32", "pmf-h32",
    "dmf-b2", "dmf-l2", "dmf-xl2", "dmf-xl2-512", "soflow-b4", "soflow-b2", "soflow-m2", "soflow-l2", "soflow-xl2",
    "facm-xl1",
}


def test_retired_lookalikes_are_gone():
    # rf-b2 / rf-xl2 were DiT look-alikes no checkpoint loaded; sit-b2 / sit-xl2 are the released ones.
    assert not {"rf-b2", "rf-xl2"} & set(list_models())


def test_builtin_ids_are_registered():
    assert EXPECTED_IDS <= set(list_models())


def test_unknown_id_lists_known_ids_and_nearest_match():
    with pytest.raises(InputError, match=r"unknown model id 'biflow-b3'\. Did you mean 'biflow-b2'\?.*sit-b2"):
        load_sampler("biflow-b3")


def test_unknown_config_option_is_named(toy_family):
    with pytest.raises(InputError, match=r"unknown config option\(s\) widht; valid options: num_classes, size, width"):
        load_sampler(toy_family, widht=3)


def test_overrides_reach_the_builder(toy_family):
    s = load_sampler(toy_family, size=4)
    assert isinstance(s, Sampler)
    assert s.info.sample_shape == (3, 4, 4)
    assert model_info(toy_family).params == 12  # 1x1 conv 3->3 with bias, counted on the meta device


def test_duplicate_ids_are_refused(toy_family):
    spec = registry.get_spec(toy_family)
    with pytest.raises(ValueError, match="already registered"):
        registry.register(toy_family, family="other", config=spec.config, build=spec.build)


def test_unknown_family_option_is_an_input_error(toy_family):
    s = load_sampler(toy_family)
    with pytest.raises(InputError, match="unknown option.*accepts: scale"):
        s.generate(torch.zeros(1, 3, 8, 8), None, sclae=2.0)


def test_outside_package_registers_through_entry_points(tmp_path, monkeypatch):
    """A distribution on sys.path with an `nfebench.adapters` entry point adds its ids."""
    (tmp_path / "outside_family.py").write_text(textwrap.dedent("""
        from dataclasses import dataclass

        import torch

        from adapters import register
        from adapters.base import TorchSampler
        from adapters.api.sampler import ModelInfo

        @dataclass(frozen=True)
        class Config:
            size: int = 6

        class Identity(TorchSampler):
            def _generate(self, noise, labels, guidance):
                return noise

        def build(name, config, *, checkpoint, device, dtype):
            info = ModelInfo(name, "outside", 0, 1, 1, "pixel", (3, config.size, config.size), config.size,
                             0, 0.0, "random-init")
            return Identity(info, torch.nn.Identity(), device=device, dtype=dtype)

        register("outside-s", family="outside", config=Config(), build=build)
    """))
    dist = tmp_path / "outside_family-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: outside-family\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\noutside = outside_family\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.list_models()  # the built-ins are registered (their modules stay imported: loading is a no-op)
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_loaded", False)
    monkeypatch.delitem(sys.modules, "outside_family", raising=False)
    assert "outside-s" in list_models()
    assert EXPECTED_IDS <= set(list_models())
    assert load_sampler("outside-s").info.sample_shape == (3, 6, 6)


def test_random_weights_are_the_same_in_every_build_and_leave_the_rng_alone(toy_family):
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a, b = load_sampler(toy_family), load_sampler(toy_family)
    assert torch.equal(a.net.weight, b.net.weight)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random stream is untouched


@pytest.mark.parametrize("model_id", list_models())
def test_a_familys_infos_equal_its_built_models(model_id):
    """`nfebench list` reads each family's infos.json instead of building every model; the file
    must say what the build says (regenerate it with `nfebench list --write-infos`)."""
    spec = registry.get_spec(model_id)
    cached = registry._cached_info(spec)
    assert spec.infos is None or cached is not None, f"{model_id} is missing from {spec.infos}: nfebench list --write-infos"
    if cached is not None:
        assert cached == registry._built_info(model_id), f"{spec.infos} is stale: nfebench list --write-infos"


def test_list_json_is_what_it_was_before_the_infos(capsys):
    """`nfebench list --json` of every id the 708b119 release listed (its output, kept as test data)
    is unchanged, but for the MeanFlow reconstructions that the official sizes replaced (issue 22)."""
    import json
    from pathlib import Path

    from harness.cli import main

    before = {m["name"]: m for m in json.loads((Path(__file__).parent / "data" / "list-708b119.json").read_text())}
    assert main(["list", "--json"]) == 0
    now = {m["name"]: m for m in json.loads(capsys.readouterr().out)}
    kept = sorted(m for m in before if not m.startswith("meanflow-"))
    assert len(kept) == 24 and [now[m] for m in kept] == [before[m] for m in kept]
