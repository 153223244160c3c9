"""Generators of synthetic demo data, not a pipeline stage: radiograph-like PNGs and DICOM CT slices with masks.

Why: the workflow must run end to end with nothing downloaded, through the same code paths as real data (a CSV
manifest, the MURA folder layout, DICOM with identifying fields), and the findings must be learnable but not trivial so
that transfer-learning effects stay visible. Same arguments, byte-identical files. Only `medxfer synthesize` and the
synthesize_demo job import this package; no stage module does.
"""

from medxfer.demo.chest import XRAY_CLASSES, synthesize_xray_source
from medxfer.demo.ct import CT_CLASSES, synthesize_ct
from medxfer.demo.limb import MURA_PARTS, synthesize_mura

__all__ = ["CT_CLASSES", "MURA_PARTS", "XRAY_CLASSES", "synthesize_ct", "synthesize_mura", "synthesize_xray_source"]
