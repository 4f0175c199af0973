"""The quality gate: a fast setting's timing counts only when the setting keeps its quality.

The **reference setting** of a timed setting is the same model and weights in float32, eager
(no torch.compile), with the family's exact decoding: a sampler with an
``exact_options(options)`` method names it (TARFlow: sequential decoding instead of Jacobi or
GS-Jacobi, every other option kept); for every other family the options stay as given, so
only the dtype and compilation differ. For the JAX backend the reference is the JAX port in
float32 (XLA always compiles).

For each timed setting that is not its own reference, on the same noise and labels
(`adapters.api.seeding`: the sweep's seed, samples ``0 .. samples-1``, 8 by default):

- rows ``max_abs_deviation`` and ``mean_abs_deviation``: ``|x - x_ref|`` over every entry of
  those samples, in **model space** (pixel values in [-1, 1] for pixel models, SD-VAE latents
  for latent ones), before any decode;
- with trained weights and a reference set (``quality_ref``, ``quality_n``), one ``fid`` row
  per setting, its reference included, measured through `harness.evaluate.evaluate_sampler`
  (the path of ``nfebench eval``) at the sweep's seed and N;
- ``quality`` on every row of the setting (`harness.results`):

  * ``reference``: the setting is its own reference;
  * ``unverified``: no check was made (``--no-quality``), or the weights are random: their
    samples say nothing about quality, and a parallel decoding converges on them within a few
    passes (TARFlow's Jacobi: about 2), so such a timing is also flagged *not representative*
    in its notes;
  * ``verified`` or ``failed``: with FIDs of both, the FID decides, as an accuracy target does
    in MLPerf: verified when the setting's FID is at most ``1 + fid_rtol`` (default 2%) times
    its reference's; without FIDs, the mean absolute deviation decides: verified when it is at
    most ``tol``. The default tolerance, 2/255, is one uint8 level of an image in [-1, 1]
    (ADM's quantisation): samples within it round, on average, to the same images. It is the
    same for every dtype (a bf16 TARFlow that fails it does change its samples by more than
    a level), and for SD-VAE latents, whose unit-variance scale is close to the pixels'.

Example::

    gate = QualityGate(GateConfig(reference="digits-heldout-stats.npz", n=200), run, seed=0, guidance=None,
                       feature_device="cpu", build_reference=lambda model: load_sampler(model, checkpoint=ckpt))
    options = {"decoding": "jacobi", "jacobi_tol": 1e-3}
    verdict = gate.check("tarflow-mini", sampler, options, reference_options=reference_options(sampler, options),
                         exact=False, dtype="float32", eager=True, settings=row_settings,
                         reference_settings=ref_row_settings)
    verdict.quality   # "verified", "failed", "unverified" or "reference"
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from adapters.api.errors import InputError
from harness.results import (FAILED, FID, MAX_ABS_DEVIATION, MEAN_ABS_DEVIATION, REFERENCE, UNVERIFIED, VERIFIED,
                             RunFile)
from adapters.api.sampler import RANDOM_INIT, weights_with_decoder
from harness.settings import canonical_options, json_options, options_text, setting_options

DEFAULT_TOL = 2 / 255  # one uint8 level of an image in [-1, 1]
DEFAULT_FID_RTOL = 0.02  # GS-Jacobi's claim is "without FID loss"; 2% is the window
DEFAULT_SAMPLES = 8
FID_BATCH = 100  # images per generate call of a FID; the FID does not depend on it


@dataclass(frozen=True)
class GateConfig:
    """The gate's settings (`nfebench bench --quality-*`)."""

    enabled: bool = True  # False: no check, every fast setting unverified
    tol: float = DEFAULT_TOL  # on the mean absolute deviation, model space
    fid_rtol: float = DEFAULT_FID_RTOL  # verified while fid <= (1 + fid_rtol) * the reference's
    samples: int = DEFAULT_SAMPLES  # samples of the deviation check
    reference: str | None = None  # reference set of the FIDs (what `nfebench eval --ref` takes)
    n: int | None = None  # samples per FID

    def check(self) -> "GateConfig":
        """Raise InputError naming the first bad setting."""
        if not self.tol >= 0 or not self.fid_rtol >= 0:
            raise InputError(f"--quality-tol and --quality-fid-rtol must be >= 0, got {self.tol} and {self.fid_rtol}")
        if self.samples < 1:
            raise InputError(f"--quality-samples must be at least 1, got {self.samples}")
        if (self.reference is None) != (self.n is None):
            raise InputError("--quality-ref and --quality-n go together: the reference set and the samples per FID")
        if self.n is not None and self.n < 2:
            raise InputError(f"--quality-n must be at least 2, got {self.n}")
        if self.reference is not None:
            from harness.evaluate import open_source

            open_source(self.reference)  # an unreadable reference fails before anything is timed
        return self


def reference_options(sampler: Any, options: Mapping[str, Any]) -> dict[str, Any]:
    """The options of `options`' reference setting: the family's exact decoding (see the module text),
    {} when that is the defaults (`harness.settings.setting_options`)."""
    exact = getattr(sampler, "exact_options", None)
    return setting_options(sampler, options if exact is None else exact(dict(options)))


def is_exact(sampler: Any, options: Mapping[str, Any]) -> bool:
    """Whether `options` decode as their reference setting does (the same options, defaults aside)."""
    return canonical_options(sampler, options) == canonical_options(sampler, reference_options(sampler, options))


def deviation(x: Any, reference: Any) -> tuple[float, float]:
    """(max, mean) of ``|x - reference|`` over every entry, in float64; torch, JAX or numpy arrays."""
    from harness.evaluate import as_torch

    d = (as_torch(x).detach().cpu().double() - as_torch(reference).detach().cpu().double()).abs()
    return float(d.max()), float(d.mean())


def judge(*, mean_dev: float, tol: float, fid: float | None = None, fid_ref: float | None = None,
          fid_rtol: float = DEFAULT_FID_RTOL) -> tuple[str, str]:
    """(verified or failed, why) of a setting with trained weights (see the module text)."""
    if fid is not None and fid_ref is not None:
        ok = fid <= (1 + fid_rtol) * fid_ref
        return (VERIFIED if ok else FAILED,
                f"FID {fid:.3f} {'within' if ok else 'beyond'} {100 * fid_rtol:g}% of the reference's {fid_ref:.3f}")
    ok = mean_dev <= tol
    return (VERIFIED if ok else FAILED,
            f"mean |x - x_ref| {mean_dev:.3g} {'<=' if ok else '>'} tolerance {tol:.3g} (model space)")


class Bound:
    """A sampler with its options fixed, for `evaluate_sampler` (which passes only guidance)."""

    def __init__(self, sampler: Any, options: Mapping[str, Any]):
        self.sampler, self.options, self.info = sampler, dict(options), sampler.info

    def generate(self, noise, labels, *, guidance=None):
        return self.sampler.generate(noise, labels, guidance=guidance, **self.options)

    def decode(self, x):
        return self.sampler.decode(x)

    @property
    def decoder_weights(self) -> str | None:
        return getattr(self.sampler, "decoder_weights", None)


@dataclass
class Verdict:
    """What the gate found for one setting: the `quality` of its rows, why, and a note for its timings."""

    quality: str
    reason: str
    notes: str = ""  # "not representative: ..." for a parallel decoding on random weights
    deviations: tuple[float, float] | None = None  # (max, mean)
    fid: float | None = None


@dataclass
class _Reference:
    sampler: Any = None
    samples: dict[str, Any] = field(default_factory=dict)  # options text -> samples
    fids: dict[str, float] = field(default_factory=dict)  # options text -> FID


class QualityGate:
    """Checks the settings of one run and adds their quality rows to its run file.

    Args:
        config: tolerances, samples and the FID reference (`GateConfig`).
        run: the run file the rows go to.
        seed, guidance: the sweep's (noise and labels of sample i come from (seed, i)).
        feature_device: device of the FID's feature network.
        build_reference: model id -> its sampler in the reference dtype (float32, eager), same
            weights; built once per model, dropped by `forget`.
    """

    def __init__(self, config: GateConfig, run: RunFile, *, seed: int, guidance: float | None, feature_device: str,
                 build_reference: Callable[[str], Any]):
        self.config, self.run, self.seed, self.guidance = config, run, seed, guidance
        self.feature_device, self.build_reference = feature_device, build_reference
        self._refs: dict[str, _Reference] = {}

    def forget(self, model: str) -> None:
        """Drop `model`'s reference sampler (its samples and FIDs stay cached)."""
        if model in self._refs:
            self._refs[model].sampler = None

    def _ref(self, model: str) -> _Reference:
        ref = self._refs.setdefault(model, _Reference())
        if ref.sampler is None:
            ref.sampler = self.build_reference(model)
        return ref

    def _inputs(self, sampler: Any):
        from adapters.api.seeding import sample_labels, sample_noise

        info, idx = sampler.info, range(self.config.samples)
        return sample_noise(self.seed, idx, info.sample_shape), sample_labels(self.seed, idx, info.num_classes)

    def _measure_fid(self, sampler: Any, options: Mapping[str, Any]):
        """The FID of `sampler` under `options`, through `evaluate_sampler` (nfebench eval's path)."""
        from harness.evaluate import evaluate_sampler, open_source

        c = self.config
        (value, *_), _, ctx = evaluate_sampler(Bound(sampler, options), open_source(c.reference), num_samples=c.n,
                                               batch_size=min(c.n, FID_BATCH), seed=self.seed, guidance=self.guidance,
                                               metrics=("fid",), device=self.feature_device)
        return value, ctx

    def _fid_row(self, measured, sampler: Any, options: Mapping[str, Any], settings: Mapping[str, Any], quality: str,
                 reason: str, described: Mapping[str, Any]) -> None:
        value, ctx = measured
        weights = weights_with_decoder(settings["weights"], getattr(sampler, "decoder_weights", None))
        config = {"reference": ctx["reference"], "reference_n": ctx["reference_n"], "mode": ctx["mode"],
                  "network": ctx["network"], "quantization": ctx["quantization"], "options": json_options(options),
                  "reference_setting": dict(described), "quality_check": reason}
        self.run.add(**{**settings, "batch_size": min(self.config.n, FID_BATCH), "decode": "on", "weights": weights},
                     metric=FID, value=value.value, n=value.n, ci_low=value.ci_low, ci_high=value.ci_high,
                     quality=quality, config=config,
                     notes=f"fid of N={value.n} samples vs {ctx['reference']} ({ctx['mode']} mode, {value.network}); "
                           f"the quality gate of nfebench bench, through evaluate_sampler")

    def _reference_fid(self, model: str, sampler: Any, options: Mapping[str, Any], settings: Mapping[str, Any],
                       described: Mapping[str, Any]) -> float:
        """The reference setting's FID, measured and recorded once per run."""
        fids = self._refs.setdefault(model, _Reference()).fids
        key = options_text(options)
        if key not in fids:
            measured = self._measure_fid(sampler, options)
            self._fid_row(measured, sampler, options, settings, REFERENCE, "the reference setting", described)
            fids[key] = measured[0].value
        return fids[key]

    def _deviation_rows(self, settings: Mapping[str, Any], options: Mapping[str, Any], described: Mapping[str, Any],
                        space: str, deviations: tuple[float, float], quality: str, reason: str) -> None:
        n = self.config.samples
        config = {"options": json_options(options), "reference_setting": dict(described), "space": space,
                  "tol": self.config.tol, "quality_check": reason}
        for metric, value in zip((MAX_ABS_DEVIATION, MEAN_ABS_DEVIATION), deviations):
            self.run.add(**{**settings, "batch_size": n, "decode": "off"}, metric=metric, value=value, n=n,
                         quality=quality, config=config,
                         notes=f"|x - x_ref| over {n} samples of seed {self.seed} in model space ({space}), against "
                               f"the reference setting (float32, eager, options {options_text(described['options']) or 'default'})")

    def check(self, model: str, sampler: Any, options: Mapping[str, Any], *, reference_options: Mapping[str, Any],
              exact: bool, dtype: str, eager: bool, settings: Mapping[str, Any],
              reference_settings: Mapping[str, Any]) -> Verdict:
        """Check one setting and add its rows (see the module text).

        Args:
            model: the model id.
            sampler: the setting's sampler, built as it is timed.
            options: the setting's options (passed to ``generate``), as `setting_options` gives them.
            reference_options, exact: its reference setting's options (`reference_options`, of the
                family's torch sampler, which has the ``exact_options`` hook a JAX port lacks) and
                whether `options` decode as those do (`is_exact`).
            dtype, eager: the setting's dtype name and whether it runs without compilation.
            settings: the results columns of the setting's rows (model .. weights; batch size
                and decode are set here).
            reference_settings: the same for the reference setting (float32, eager, its options).
        """
        c = self.config
        ref_options = dict(reference_options)
        random = RANDOM_INIT in str(settings["weights"])
        wants_fid = c.reference is not None and not random
        parallel = not exact
        described = {"dtype": "float32", "compiled": bool(reference_settings["compiled"]),  # JAX: XLA compiles it
                     "options": json_options(ref_options)}
        if dtype == "float32" and eager and not parallel:
            fid = self._reference_fid(model, sampler, options, settings, described) if wants_fid else None
            return Verdict(REFERENCE, "the reference setting (float32, eager, exact decoding)", fid=fid)
        notes = ""
        if random and parallel:
            notes = (f"not representative: {options_text(options)} on random weights, which a parallel decoding "
                     f"solves in a few passes; trained weights need more")
        if not c.enabled:
            return Verdict(UNVERIFIED, "no quality check made (--no-quality)", notes)
        noise, labels = self._inputs(sampler)
        x = sampler.generate(noise, labels, guidance=self.guidance, **options)
        ref = self._ref(model)
        key = options_text(ref_options)
        if key not in ref.samples:
            ref.samples[key] = ref.sampler.generate(noise, labels, guidance=self.guidance, **ref_options)
        deviations = deviation(x, ref.samples[key])
        fid = None
        if random:
            quality, reason = UNVERIFIED, "random weights: deviations recorded, quality not checked"
        elif wants_fid:
            fid_ref = self._reference_fid(model, ref.sampler, ref_options, reference_settings, described)
            measured = self._measure_fid(sampler, options)
            fid = measured[0].value
            quality, reason = judge(mean_dev=deviations[1], tol=c.tol, fid=fid, fid_ref=fid_ref, fid_rtol=c.fid_rtol)
            self._fid_row(measured, sampler, options, settings, quality, reason, described)
        else:
            quality, reason = judge(mean_dev=deviations[1], tol=c.tol)
        self._deviation_rows(settings, options, described, sampler.info.space, deviations, quality, reason)
        return Verdict(quality, reason, notes, deviations, fid)
