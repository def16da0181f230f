"""Draw docs/img/grounding_seg.png: the deploy app's grounding SEG rendered over its source image.

Usage: python docs/img/make_seg_render.py [--bundle_root bundles/vecl_cxr] [--out docs/img/grounding_seg.png]
A phantom test image with a drawn finding is exported as DX DICOM and run through the deploy
pipeline (the trained bundle if it has weights, with a site threshold of 0 for the shown finding so
it is called present); the SEG file it writes is then read back with highdicom and drawn over
the DICOM pixels with pydicom, as a viewer would: the fractional segment as a colour overlay.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import highdicom as hd  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pydicom  # noqa: E402

from monai_vecl.data.dicom_export import export_dicom  # noqa: E402
from monai_vecl.data.manifest import read_manifest  # noqa: E402
from monai_vecl.data.phantom import generate_phantom  # noqa: E402
from monai_vecl.data.dicom_image import dicom_to_gray01  # noqa: E402
from monai_vecl.deploy.pipeline import StudyPipeline, save_sr  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle_root", type=Path, default=Path("bundles/vecl_cxr"))
    parser.add_argument("--finding", default="Pleural Effusion")
    parser.add_argument("--out", type=Path, default=Path("docs/img/grounding_seg.png"))
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="seg_render_"))
    manifest = generate_phantom(tmp / "phantom", n_images=60, seed=5, workers=1)
    record = next(r for r in read_manifest(manifest, "test") if r.findings[args.finding] and sum(r.findings.values()) == 1)
    source_path = export_dicom(record, manifest, tmp / "source.dcm")
    trained = (args.bundle_root / "models" / "model.pt").is_file()
    pipeline = StudyPipeline({"deploy": {
        "bundle_root": str(args.bundle_root.resolve()) if trained else None, "device": "cpu",
        "findings": [args.finding], "site_thresholds": {args.finding: 0.0}, "thresholds_file": None,
    }})
    result = pipeline.process([source_path])
    seg_path = save_sr(result.seg, tmp / "out")
    seg = hd.seg.segread(seg_path)
    source = pydicom.dcmread(source_path)
    overlay = seg.get_pixels_by_source_instance([source.SOPInstanceUID], segment_numbers=[1])[0, :, :, 0]
    fig, axes = plt.subplots(1, 2, figsize=(8, 4.3))
    gray = dicom_to_gray01(source)
    for ax in axes:
        ax.imshow(gray, cmap="gray", vmin=0, vmax=1)
        ax.axis("off")
    axes[0].set_title("source DX (phantom test image)", fontsize=9)
    shown = np.ma.masked_less(overlay, 0.2)  # a viewer's usual lower cut of a fractional segment
    axes[1].imshow(shown, cmap="jet", alpha=0.45, vmin=0, vmax=1)
    with np.load(manifest.parent / record.extra["regions"]) as truth:
        axes[1].contour(truth[args.finding], levels=[0.5], colors="lime", linewidths=1)
    label = seg.get_segment_description(1).segment_label
    model = "trained bundle" if trained else "UNTRAINED network"
    axes[1].set_title(f"SEG {label!r} ({model}), truth: green", fontsize=9)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(args.out, dpi=90)
    print(f"{args.out}: SEG {seg_path.name}, score {result.scores[args.finding]:.3f}, {model}")


if __name__ == "__main__":
    main()
