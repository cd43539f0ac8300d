"""The network: architecture, Grad-CAM, test-time views, calibration, the export's card."""
