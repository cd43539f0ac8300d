"""The network and one image: naming, preprocessing, architecture, Grad-CAM, metrics, storage.

Imported by both `train_job` and `pipelines`; imports neither.
"""
