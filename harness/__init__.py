"""nfebench: one sampler interface, standard metrics and timing sweeps for image generators."""

__version__ = "0.1.0"
