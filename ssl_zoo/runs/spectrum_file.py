"""spectrum.npy / spectrum_backbone.npy, the covariance spectra at the end of training: the one writer and reader.

A spectrum is one row of numbers saved by numpy without pickling; it is read back with allow_pickle=False.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

from ssl_zoo.runs.atomic import atomic_write_bytes
from ssl_zoo.runs.layout import SPECTRA

if TYPE_CHECKING:
    import numpy as np


def write_spectrum(run_dir: Path, prefix: str, values: np.ndarray) -> None:
    """The spectrum of the embedding named by its metric prefix ("" projector output, "backbone_")."""
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, values, allow_pickle=False)
    atomic_write_bytes(run_dir / SPECTRA[prefix], buf.getvalue())


def spectrum_or_problem(run_dir: Path, prefix: str) -> tuple[np.ndarray | None, str | None]:
    """One row of finite numbers (never a pickled array)."""
    import numpy as np

    path = Path(run_dir) / SPECTRA[prefix]
    if not path.exists():
        return None, None
    try:
        values = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        return None, f"{path}: not a readable .npy ({str(err).splitlines()[0][:60] if str(err) else 'truncated'})"
    if not isinstance(values, np.ndarray) or values.ndim != 1 or values.dtype.kind not in "fiu" or len(values) == 0:
        return None, f"{path}: not one row of numbers"
    values = values.astype(np.float64)
    if not np.isfinite(values).all():
        return None, f"{path}: non-finite values"
    return values, None
