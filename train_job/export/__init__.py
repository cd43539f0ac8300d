"""The end of a training: calibration and test evaluation, report.html, the export's files."""
