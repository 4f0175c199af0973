"""Writes mf-tiny-flax084-orbax044.zip: a small MeanFlow TrainState saved by the official
ckpt_util.save_checkpoint under the stack scripts/install.sh pins (orbax-checkpoint 0.4.4,
jax 0.4.27, and flax 0.8.4, a "flax>=0.8" that installs beside them). That stack writes
checkpoint_<step>/ as _METADATA and one msgpack file `checkpoint` (no OCDBT), which
test_model.py::test_the_pinned_orbax_format_loads reads. The network is tiny (hidden 8, one
block) so the zip stays small; the weights are the official init plus seeded noise, the EMA
noise differing from the raw weights'.

Run (in a virtual environment holding only that stack and optax 0.2.2; never in nfebench's):

    python make_legacy_checkpoint.py /path/to/reference-code/meanflow OUT.zip
"""

import sys
import tempfile
import types
import zipfile
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import jax
import numpy as np
from flax import jax_utils

SIZE = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=8, depth=1, num_heads=2, num_classes=10)
STEP = 7


def perturb(tree, seed):
    rng = np.random.default_rng(seed)

    def one(a):
        a = np.asarray(a)
        std = float(np.prod(a.shape[:-1])) ** -0.5 if a.ndim >= 2 else 0.1
        return a + std * rng.standard_normal(a.shape).astype(a.dtype)

    return jax.tree_util.tree_map(one, tree)


def main(reference: str, out: str) -> None:
    for name in ("ml_collections", "clu", "clu.metric_writers", "utils.fid_util", "utils.vae_util",
                 "utils.input_pipeline"):
        stub = types.ModuleType(name)
        stub.ConfigDict, stub.metric_writers, stub.LatentManager = dict, None, None
        sys.modules[name] = stub
    sys.path.insert(0, reference)
    import train
    from models import models_dit
    from utils import ckpt_util

    models_dit.DiT_legacy = partial(models_dit.DiT, **SIZE)
    model = train.MeanFlow(model_str="DiT_legacy", model_config={}, num_classes=SIZE["num_classes"])
    state = train.create_train_state(jax.random.key(0), SimpleNamespace(training=SimpleNamespace(adam_b2=0.95)),
                                     model, SIZE["input_size"], 1e-4)
    state = state.replace(step=STEP, params=perturb(state.params, 1), ema_params=perturb(state.params, 2))
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp) / "mf-tiny"
        ckpt_util.save_checkpoint(jax_utils.replicate(state), str(workdir))
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
            for f in sorted(workdir.rglob("*")):
                if f.is_file():
                    z.write(f, f.relative_to(tmp).as_posix())


if __name__ == "__main__":
    main(*sys.argv[1:])
