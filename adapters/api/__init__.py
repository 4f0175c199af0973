"""The contract: what a model family is written against and the harness is built on.

It imports nothing of nfebench. Modules: `sampler` (`ModelInfo`, the `Sampler` protocol,
`DecoderInfo`, the shared input checks), `errors` (`InputError`), `seeding` (noise and labels
from (seed, index), seeded random weights), `files` (atomic writes, file digests),
`checkpoint` (safe reading of released and training checkpoints), `config` (config fields
with help), `training` (what a trainable family hands a track), `devices` (device names, JAX
devices) and `registry` (ids, specs, entry-point discovery).
"""
