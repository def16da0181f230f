"""MONAI Deploy App SDK operators around :class:`~monai_vecl.deploy.pipeline.StudyPipeline`.

Graph (``deploy/app.py``): ``DicomStudyLoaderOperator`` (folder → studies grouped by
StudyInstanceUID) → ``VECLFindingsOperator`` (selection, preprocessing, zero-shot scoring and the
SR, with the model loaded once) → ``SRWriterOperator`` (SR files plus ``results.json`` listing
every study's SR or skip reason and every file left out). Importing this module imports the SDK
(and holoscan); nothing else in ``monai_vecl`` does.
"""

from __future__ import annotations

import logging
from pathlib import Path

from monai.deploy.core import Fragment, Operator, OperatorSpec

from monai_vecl.deploy.pipeline import PipelineConfig, StudyPipeline, StudyResult, group_by_study, save_sr
from monai_vecl.files import write_json

log = logging.getLogger(__name__)


class DicomStudyLoaderOperator(Operator):
    """Emits ``studies``: ``(dict StudyInstanceUID → files, dict non-DICOM file → reason)`` for a folder tree."""

    def __init__(self, fragment: Fragment, *args, input_folder: Path, **kwargs):
        self.input_folder = Path(input_folder)
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.output("studies")

    def compute(self, op_input, op_output, context) -> None:
        if not self.input_folder.exists():
            raise FileNotFoundError(f"input folder {self.input_folder} does not exist")
        files = (
            [self.input_folder]
            if self.input_folder.is_file()
            else sorted(p for p in self.input_folder.rglob("*") if p.is_file())
        )
        studies, rejected = group_by_study(files)
        log.info("%d files: %d studies, %d not DICOM", len(files), len(studies), len(rejected))
        op_output.emit((studies, rejected), "studies")


class VECLFindingsOperator(Operator):
    """Runs :meth:`StudyPipeline.process` on each study; emits ``results`` (list of :class:`StudyResult`)."""

    def __init__(self, fragment: Fragment, *args, config: PipelineConfig, **kwargs):
        self.pipeline = StudyPipeline(config)  # once per application, not per study
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("studies")
        spec.output("results")

    def compute(self, op_input, op_output, context) -> None:
        studies, unreadable = op_input.receive("studies")
        results: list[tuple[str, StudyResult]] = []
        for uid, paths in studies.items():
            try:
                result = self.pipeline.process(paths)
            except Exception as err:  # noqa: BLE001 - one broken study must not stop the others; it is reported
                log.error("study failed: %s", type(err).__name__)
                result = StudyResult(sr=None, skipped_reason=f"app error: {type(err).__name__}: {err}")
            results.append((uid, result))
        op_output.emit((results, unreadable), "results")


class SRWriterOperator(Operator):
    """Writes each SR as ``<SOPInstanceUID>.dcm`` and a ``results.json`` summary into the output folder."""

    SUMMARY = "results.json"

    def __init__(self, fragment: Fragment, *args, output_folder: Path, **kwargs):
        self.output_folder = Path(output_folder)
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("results")

    def compute(self, op_input, op_output, context) -> None:
        results, unreadable = op_input.receive("results")
        self.output_folder.mkdir(parents=True, exist_ok=True)
        summary = {"studies": [], "unreadable_files": unreadable}
        for uid, result in results:
            entry = {
                "study_instance_uid": uid,
                "sr_file": None,
                "skipped_reason": result.skipped_reason,
                "scores": result.scores,
                "present": [f.name for f in result.findings if f.present],
                # Per finding: threshold (null: score only, no call) and where it came from.
                "thresholds": {f.name: {"threshold": f.threshold, "source": f.threshold_source}
                               for f in result.findings},
                "source_file": None if result.source_path is None else str(result.source_path),
                "files_left_out": result.rejected,
                "timings_s": result.timings,
            }
            if result.sr is not None:
                entry["sr_file"] = save_sr(result.sr, self.output_folder).name
            # the grounding SEG (findings called present) goes next to the SR
            entry["seg_file"] = None if result.seg is None else save_sr(result.seg, self.output_folder).name
            summary["studies"].append(entry)
        write_json(self.output_folder / self.SUMMARY, summary)
        written = sum(1 for s in summary["studies"] if s["sr_file"])
        skipped = sum(1 for s in summary["studies"] if s["skipped_reason"])
        log.info("%d SRs written (notices included), %d studies without findings, %d files not DICOM",
                 written, skipped, len(unreadable))
