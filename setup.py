"""One distribution for both jobs: `pip install -e .[dev]` locally, `--setup_file` on Dataflow."""

from setuptools import find_packages, setup

setup(
    name="breakhis-gradcam",
    version="0.1.0",
    description="BreakHis benign/malignant classifier (VGG16) with Grad-CAM: training job and "
    "Apache Beam scoring pipeline",
    packages=find_packages(
        include=["model", "model.*", "train_job", "train_job.*", "pipelines", "pipelines.*"]
    ),
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.16",  # Keras 3
        "tensorboard",  # TensorBoard callback logs; not pulled in by tensorflow 2.21
        "apache-beam[gcp]>=2.60",
        "numpy",
        "pillow",
        "matplotlib",
        "scikit-learn",
        "google-cloud-storage",
    ],
    extras_require={
        "dev": ["pytest", "gcp-storage-emulator", "ruff"],
    },
)
