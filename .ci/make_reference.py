"""Write the CI regression gate's reference batch: 16 fixed 128x128 crops of the photograph
that matplotlib ships (mpl-data/sample_data/grace_hopper.jpg), as an ADM-format image .npz.

Real pixels from an installed package, no download and nothing committed; the crops are
fixed, so the FID, sFID and precision/recall of fixed-seed samples against it are fixed
numbers that the committed baseline can hold to a tight tolerance.
"""

import sys

import numpy as np
from matplotlib import cbook
from PIL import Image

photo = np.asarray(Image.open(cbook.get_sample_data("grace_hopper.jpg")).convert("RGB"))  # (600, 512, 3)
corners = [(y, x) for y in (0, 120, 240, 360) for x in (0, 128, 256, 384)]
crops = np.stack([photo[y:y + 128, x:x + 128] for y, x in corners])  # (16, 128, 128, 3) uint8
np.savez(sys.argv[1], arr_0=crops)
