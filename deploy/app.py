"""MONAI Deploy application: chest X-ray studies in a folder → DICOM SRs of VECL zero-shot findings.

Run on CPU (or the GPU when present)::

    ulimit -s 32768   # holoscan, under the SDK, warns and may crash with the default 8 MB stack
    python deploy/app.py -i INPUT_DIR -o OUTPUT_DIR [-m BUNDLE_ROOT] [-l DEBUG]

Settings come from ``deploy/config.yaml`` beside this file, or the file named by
``$VECL_DEPLOY_CONFIG``; ``-m`` overrides its ``bundle_root``. The output folder receives one
``<SOPInstanceUID>.dcm`` SR per scored study and ``results.json`` (scores, skip reasons, files left out).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from monai.deploy.conditions import CountCondition
from monai.deploy.core import Application

from monai_vecl.deploy.operators import DicomStudyLoaderOperator, SRWriterOperator, VECLFindingsOperator
from monai_vecl.deploy.pipeline import PipelineConfig


class VECLFindingsApp(Application):
    """Loader → VECL findings (selection, preprocessing, zero-shot PNC, SR) → SR writer."""

    name = "vecl-cxr-findings"
    description = "Zero-shot chest X-ray findings (VECL) reported as a DICOM Comprehensive 3D SR"
    version = "0.1.0"

    def compose(self) -> None:
        context = Application.init_app_context(self.argv)
        config = PipelineConfig.from_yaml(os.environ.get("VECL_DEPLOY_CONFIG", Path(__file__).with_name("config.yaml")))
        if context.args.get("model"):  # only an explicit -m, not the SDK's default "models" folder
            config = dataclasses.replace(config, bundle_root=Path(context.args["model"]).resolve())
        loader = DicomStudyLoaderOperator(
            self, CountCondition(self, 1), input_folder=Path(context.input_path), name="dicom_study_loader"
        )
        findings = VECLFindingsOperator(self, config=config, name="vecl_findings")
        writer = SRWriterOperator(self, output_folder=Path(context.output_path), name="sr_writer")
        self.add_flow(loader, findings, {("studies", "studies")})
        self.add_flow(findings, writer, {("results", "results")})


if __name__ == "__main__":
    VECLFindingsApp().run()
