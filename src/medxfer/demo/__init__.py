"""Generators of synthetic demo data, not a pipeline stage: radiograph-like PNGs and DICOM CT slices with masks.

Why: the workflow must run end to end with nothing downloaded, through the same code paths as real data (a CSV
manifest, the MURA folder layout, DICOM with identifying fields), and the findings must be learnable but not trivial so
that transfer-learning effects stay visible. Same arguments, byte-identical files. Only `medxfer synthesize` and the
synthesize_demo job import this package; no stage module does.
"""

from collections.abc import Callable
from pathlib import Path

from medxfer.demo.chest import XRAY_CLASSES, synthesize_xray_source
from medxfer.demo.ct import CT_CLASSES, synthesize_ct
from medxfer.demo.grades import FRACTURE_GRADES, synthesize_fracture_grades
from medxfer.demo.limb import MURA_PARTS, synthesize_mura

# Demo set name (medxfer.paths.DEMO_SETS) -> generator(out_dir, n, size, seed); n counts images for xray_source,
# patients for the others. The one table the synthesize_demo job and `medxfer synthesize` both read.
GENERATORS: dict[str, Callable[[Path, int, int, int], None]] = {
    "xray_source": synthesize_xray_source,
    "mura": synthesize_mura,
    "ct": synthesize_ct,
    "grades": synthesize_fracture_grades,
}

__all__ = [
    "CT_CLASSES",
    "FRACTURE_GRADES",
    "GENERATORS",
    "MURA_PARTS",
    "XRAY_CLASSES",
    "synthesize_ct",
    "synthesize_fracture_grades",
    "synthesize_mura",
    "synthesize_xray_source",
]
