# Worker container for the scoring pipeline on Dataflow GPU workers (works on CPU workers too).
#
#   docker build -t us-central1-docker.pkg.dev/PROJECT/REPOSITORY/breakhis-scoring:gpu .
#   docker push us-central1-docker.pkg.dev/PROJECT/REPOSITORY/breakhis-scoring:gpu
#
# The Python and Beam versions must equal those of the environment that launches the job
# (python -m pipelines.score ... --sdk_container_image ...): Dataflow refuses mismatched SDKs.
ARG PYTHON_VERSION=3.11
ARG BEAM_VERSION=2.77.0
FROM apache/beam_python${PYTHON_VERSION}_sdk:${BEAM_VERSION}

ARG TENSORFLOW_VERSION=2.21.0

# `install-nvidia-driver` in --dataflow_service_options installs the driver on the VM and mounts
# it here; TensorFlow's CUDA libraries (pip wheels below) load libcuda from this path.
ENV LD_LIBRARY_PATH=/usr/local/nvidia/lib64:/usr/local/nvidia/lib
# Take GPU memory as needed instead of all of it when the model loads.
ENV TF_FORCE_GPU_ALLOW_GROWTH=true
ENV TF_CPP_MIN_LOG_LEVEL=1

WORKDIR /pipeline

# The heavy, pinned dependency first, so a code change rebuilds only the layers below.
# The [and-cuda] extra brings the CUDA runtime and cuDNN as pip wheels matching this release.
RUN pip install --no-cache-dir "tensorflow[and-cuda]==${TENSORFLOW_VERSION}"

COPY setup.py ./
COPY model ./model
COPY train_job ./train_job
COPY pipelines ./pipelines
# apache-beam[gcp] is already in the base image at BEAM_VERSION and satisfies setup.py, so pip
# keeps it; `pip check` fails the build on a dependency conflict instead of the workers.
RUN pip install --no-cache-dir . && pip check

# The base image's entrypoint (/opt/apache/beam/boot) starts the Beam SDK worker.
