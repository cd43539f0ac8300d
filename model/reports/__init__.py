"""report.html of all three reports: templates, sections, plots, metric meanings, gallery assets."""
