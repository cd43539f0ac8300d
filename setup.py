"""One distribution for both jobs: `pip install -e .[dev]` locally, `--setup_file` on Dataflow."""

from setuptools import find_packages, setup

setup(
    # "breakhis-gradcam" on PyPI is an unrelated 2020 project; this name is free there.
    name="breakhis-vgg16-gradcam",
    version="0.1.0",
    description="BreakHis benign/malignant classifier (VGG16) with Grad-CAM: training job and "
    "Apache Beam scoring pipeline",
    packages=find_packages(
        include=["model", "model.*", "train_job", "train_job.*", "pipelines", "pipelines.*"]
    ),
    # The report templates are read at run time (jinja2.PackageLoader), so they ship in the sdist
    # Dataflow stages with --setup_file and in every wheel built from the tree.
    package_data={
        "model.reports": ["templates/*.html", "templates/*.css", "templates/sections/*.html"]
    },
    python_requires=">=3.10",
    # The installed way to call the jobs; each is the same as its `python ...` command.
    entry_points={
        "console_scripts": [
            "breakhis-train = train_job.main:main",  # python train_job/main.py
            "breakhis-score = pipelines.score:main",  # python -m pipelines.score
            "breakhis-report = pipelines.report:main",  # python -m pipelines.report
        ]
    },
    install_requires=[
        "tensorflow>=2.16",  # Keras 3
        # Scoring loads .keras files in safe mode; releases before 3.14 let a crafted archive
        # bypass it (CVE-2025-1550, fixed in 3.9; CVE-2025-8747 and CVE-2025-9906, fixed in
        # 3.11; CVE-2026-1462 via TFSMLayer, fixed in 3.14).
        "keras>=3.14",
        "tensorboard",  # TensorBoard callback logs; not pulled in by tensorflow 2.21
        "apache-beam[gcp]>=2.60",
        "numpy",
        "pillow",
        "matplotlib",
        "scikit-learn",
        "scipy",  # temperature scaling's one-dimensional optimisation
        "jinja2",  # the HTML reports' templates (autoescaped)
        "google-cloud-storage",
    ],
    extras_require={
        # uv: scripts/lock_deps.sh compiles the locks in requirements/, scripts/upgrade_deps.sh
        # builds its throwaway environment of the newest releases.
        # mkdocs: the reference in docs/ (mkdocs build --strict in CI).
        # pytest-xdist: scripts/test.sh runs the tests in one process per core.
        "dev": ["pytest", "pytest-xdist", "gcp-storage-emulator", "ruff", "uv", "mkdocs"],
        # The Dataflow GPU worker image (Dockerfile): the CUDA runtime and cuDNN as pip wheels.
        "gpu": ["tensorflow[and-cuda]"],
    },
)
