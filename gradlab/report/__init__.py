"""Paper-style reports from run directories: figures, tables and a written summary.

The report side reads run directories only (gradlab.runs); it never imports torch or
model code, so it runs anywhere pandas and matplotlib do.
"""

from gradlab.errors import ReportError
from gradlab.report.build import ReportResult, build_report

__all__ = ["ReportError", "ReportResult", "build_report"]
