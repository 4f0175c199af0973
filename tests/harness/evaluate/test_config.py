"""`harness.evaluate.config`: `EvalConfig` and `MetricOptions` (help, checks, the manifest part),
and `evaluate_sampler`'s two ways of being called. No network runs here: every check fails
before any work."""

import dataclasses

import pytest

from adapters.api.errors import InputError
from harness.evaluate import EvalConfig, MetricOptions, evaluate_sampler

BASE = dict(num_samples=8, batch_size=2, seed=0)


@pytest.mark.parametrize("cls", [EvalConfig, MetricOptions])
def test_every_field_says_what_it_is(cls):
    for f in dataclasses.fields(cls):
        assert len(f.metadata.get("help", "")) > 10, f.name


def test_n_batch_size_and_seed_must_be_given():
    with pytest.raises(TypeError, match="seed"):
        EvalConfig(num_samples=8, batch_size=2)


@pytest.mark.parametrize("change, message", [
    ({"num_samples": 1}, "--num-samples must be at least 2, got 1"),
    ({"batch_size": 0}, "--batch-size must be a positive integer, got 0"),
    ({"metrics": ("fid", "fdd")}, "unknown metric"),
    ({"shard_size": 0}, "--shard-size must be a positive integer, got 0"),
    ({"save_samples": "samples.png"}, "must end in .npz"),
    ({"options": MetricOptions(bootstrap=1)}, "--bootstrap must be 0"),
    ({"options": MetricOptions(mode="tf")}, "tf"),
])
def test_bad_settings_are_refused_by_name(change, message):
    with pytest.raises(InputError, match=message):
        EvalConfig(**{**BASE, **change}).check()


def test_the_manifest_part_holds_what_changes_the_result():
    config = EvalConfig(**BASE, settings={"overrides": {"depth": 2}, "backend": "torch"})
    part = config.manifest()
    assert set(part) == {"num_samples", "seed", "guidance", "mode", "metric_options", "shard_size", "save_samples",
                         "device_type", "overrides", "backend"}
    assert part["device_type"] == "cpu" and part["save_samples"] is False and part["overrides"] == {"depth": 2}
    # Batch size, progress, the work dir and the samples file's name change no number.
    same = dataclasses.replace(config, batch_size=64, progress=False, work_dir="elsewhere")
    assert same.manifest() == part
    assert dataclasses.replace(config, save_samples="a.npz").manifest() == \
        dataclasses.replace(config, save_samples="b.npz").manifest() == {**part, "save_samples": True}
    assert dataclasses.replace(config, seed=1).manifest() != part


def test_evaluate_sampler_takes_a_config_or_its_fields():
    """The older keyword call makes an EvalConfig; keywords beside a config replace its fields.
    Both are checked before the sampler or the reference is touched (None here)."""
    with pytest.raises(InputError, match="--num-samples must be at least 2, got 1"):
        evaluate_sampler(None, None, num_samples=1, batch_size=2, seed=0)
    with pytest.raises(InputError, match="--batch-size must be a positive integer, got 0"):
        evaluate_sampler(None, None, EvalConfig(**BASE), batch_size=0)
    with pytest.raises(TypeError, match="batchsize"):
        evaluate_sampler(None, None, EvalConfig(**BASE), batchsize=4)
