# Worker container for the scoring pipeline on Dataflow GPU workers (works on CPU workers too).
#
# Build it with the script, which passes the lock's Python and Beam versions as build arguments:
#
#   bash scripts/build_worker_image.sh us-central1-docker.pkg.dev/PROJECT/REPOSITORY/breakhis-scoring:gpu
#   docker push us-central1-docker.pkg.dev/PROJECT/REPOSITORY/breakhis-scoring:gpu
#
# Dataflow refuses workers whose Python or Beam differ from the launching environment's. Both
# come from the lock (pyproject.toml's Python, requirements/gpu.txt's apache-beam), the same one
# scripts/setup_env.sh installs into the launcher's .venv, so there is no version to keep in step
# by hand here. The defaults below only make a plain `docker build` fail with a pointer.
ARG PYTHON_VERSION=-use-scripts-build_worker_image.sh-
ARG BEAM_VERSION=use-scripts-build_worker_image.sh
FROM apache/beam_python${PYTHON_VERSION}_sdk:${BEAM_VERSION}
ARG BEAM_VERSION

# `install-nvidia-driver` in --dataflow_service_options installs the driver on the VM and mounts
# it here; TensorFlow's CUDA libraries (pip wheels from the lock) load libcuda from this path.
ENV LD_LIBRARY_PATH=/usr/local/nvidia/lib64:/usr/local/nvidia/lib
# Take GPU memory as needed instead of all of it when the model loads.
ENV TF_FORCE_GPU_ALLOW_GROWTH=true
ENV TF_CPP_MIN_LOG_LEVEL=1

WORKDIR /pipeline

# The heavy dependencies first, so a code change rebuilds only the layers below. The GPU lock is
# the runtime lock plus tensorflow[and-cuda]'s CUDA runtime and cuDNN wheels, every one pinned
# with its hash; its apache-beam is the base image's own, so pip keeps that.
COPY requirements/gpu.txt ./requirements/gpu.txt
RUN pip install --no-cache-dir --require-hashes -r requirements/gpu.txt

COPY setup.py ./
COPY model ./model
COPY train_job ./train_job
COPY pipelines ./pipelines
# `pip check` fails the build on a dependency conflict instead of the workers; the last check
# fails it when the Beam installed is not the one the base image's worker boot expects.
RUN pip install --no-cache-dir --no-deps --no-build-isolation . && pip check \
    && python -c "import apache_beam, sys; sys.exit(apache_beam.__version__ != '${BEAM_VERSION}')"

# The base image's entrypoint (/opt/apache/beam/boot) starts the Beam SDK worker.
