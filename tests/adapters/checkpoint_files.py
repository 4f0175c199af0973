"""Checkpoint files for the loading tests. Test modules import this relatively
(``from ..checkpoint_files import save``)."""

import torch


def save(folder, contents, name: str = "ckpt.pt") -> str:
    """`contents` (a state_dict, or a training file's dict of them) written by ``torch.save`` to
    ``folder / name``; that path, as a string for ``load_sampler``.

    Example::

        load_sampler("sit-b2", save(tmp_path, net.state_dict(), "SiT.pt"), **TINY)
    """
    path = folder / name
    torch.save(contents, path)
    return str(path)
