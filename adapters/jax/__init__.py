"""JAX/Flax ports of the adapters' networks and samplers (``pip install 'nfebench[jax]'``).

One checkpoint serves both back-ends: every port converts the PyTorch adapter's
``state_dict`` (see `adapters.jax.convert`), and its parity test holds the JAX output to
the PyTorch output on the same weights and noise.
"""
