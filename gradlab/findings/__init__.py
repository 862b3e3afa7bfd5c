"""Findings: named pathologies with their layer, step and evidence, concluded from a run's
recorded statistics by rules (gradlab.findings.rules, one per module), each with thresholds
whose defaults name their source. Reads run directories only; never imports torch."""

from gradlab.findings.engine import check_runs, default_settings
from gradlab.findings.finding import ERROR, INFO, SEVERITIES, WARNING, Finding, Place
from gradlab.findings.live import FindingStop, FindingWarning, LiveFindings
from gradlab.findings.rules import RULES
from gradlab.findings.thresholds import Settings, Threshold

__all__ = ["ERROR", "INFO", "RULES", "SEVERITIES", "WARNING", "Finding", "FindingStop", "FindingWarning",
           "LiveFindings", "Place", "Settings", "Threshold", "check_runs", "default_settings"]
