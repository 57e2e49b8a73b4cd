# GPU images for tf_mrc. Two targets:
#
#   docker build -t tf_mrc:tf1.13 .                    # default (target "legacy"): the user's stack
#   docker build --target primary -t tf_mrc:tf2.15 .   # the primary stack
#   docker run --gpus all -it tf_mrc:tf1.13 horovodrun -np 4 -H localhost:4 python run_finetune.py ...
#
# legacy:  CUDA 10.0 + cuDNN 7, Python 3.7, tensorflow-gpu 1.13.1, blocksparse 1.13.1 (its kernels link
#          against CUDA 10.0's libcudart.so.10.0, so it runs only here), Horovod 0.19.5 with NCCL for GPU
#          allreduce/broadcast and Open MPI for the rest (0.19.5's gloo does not build on current headers).
# primary: CUDA 12.2 + cuDNN 8, Python 3.11, tensorflow[and-cuda] 2.15.1 (the last release with Estimator),
#          Horovod 0.28.1 with NCCL + gloo (no MPI needed).
#
# NOT BUILT OR RUN IN THIS PROJECT'S CI: the development machines have neither a docker engine nor a GPU.
# Every package set below is the one scripts/env_tf1.sh and scripts/env_horovod.sh build and test on CPU
# (requirements-tf1.txt, requirements.txt); only the CUDA parts (base images, NCCL builds, tensorflow-gpu,
# blocksparse) are untested. Known hazards of the old base image, handled below: NVIDIA rotated the signing
# key of its apt repository in 2022, so the image's own CUDA apt sources are dropped before apt-get update
# (NCCL and cuDNN already ship in the devel image); Ubuntu 18.04's Open MPI 2.1 predates what Horovod
# recommends, so Open MPI 4.0 is built from source as Horovod's own Dockerfiles did.

# ---------------------------------------------------------------------------------------------------------
FROM nvidia/cuda:12.2.2-cudnn8-devel-ubuntu22.04 AS primary
ARG HOROVOD_VERSION=0.28.1
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 PYTHONIOENCODING=utf-8
SHELL ["/bin/bash", "-euo", "pipefail", "-c"]
RUN apt-get update && apt-get install -y --no-install-recommends software-properties-common && \
    add-apt-repository -y ppa:deadsnakes/ppa && apt-get update && \
    apt-get install -y --no-install-recommends python3.11 python3.11-dev python3.11-venv \
        build-essential cmake git && \
    rm -rf /var/lib/apt/lists/*
RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH VIRTUAL_ENV=/opt/venv
WORKDIR /workspace/tf_mrc
COPY requirements.txt requirements-dev.txt ./
# The GPU build of the same TensorFlow: tensorflow-cpu -> tensorflow[and-cuda] (CUDA/cuDNN as pip wheels).
RUN sed 's/^tensorflow-cpu==/tensorflow[and-cuda]==/' requirements.txt > /tmp/requirements-gpu.txt && \
    pip install --no-cache-dir -U pip setuptools wheel && \
    pip install --no-cache-dir -r /tmp/requirements-gpu.txt -r requirements-dev.txt
# Horovod against that TensorFlow; the CUDA driver stubs stand in for libcuda.so.1 while building and
# checking the build (no GPU driver during docker build). CMAKE_POLICY_VERSION_MINIMUM: see scripts/env_horovod.sh.
RUN ldconfig /usr/local/cuda/lib64/stubs && \
    CMAKE_POLICY_VERSION_MINIMUM=3.5 HOROVOD_GPU_OPERATIONS=NCCL HOROVOD_CUDA_HOME=/usr/local/cuda \
    HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 HOROVOD_WITHOUT_PYTORCH=1 \
    HOROVOD_WITHOUT_MXNET=1 pip install --no-cache-dir --no-build-isolation --no-binary horovod \
        "horovod==${HOROVOD_VERSION}" && \
    python -c "import horovod.tensorflow as hvd; assert hvd.gloo_built() and hvd.nccl_built()" && \
    ldconfig
COPY . .
ENV PYTHONPATH=/workspace/tf_mrc HOROVOD_GLOO_TIMEOUT_SECONDS=60 HOROVOD_START_TIMEOUT=60
CMD ["bash"]

# ---------------------------------------------------------------------------------------------------------
FROM nvidia/cuda:10.0-cudnn7-devel-ubuntu18.04 AS legacy
ARG OPENMPI_VERSION=4.0.7
ARG HOROVOD_VERSION=0.19.5
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 PYTHONIOENCODING=utf-8
SHELL ["/bin/bash", "-euo", "pipefail", "-c"]
RUN rm -f /etc/apt/sources.list.d/cuda.list /etc/apt/sources.list.d/nvidia-ml.list && \
    apt-get update && apt-get install -y --no-install-recommends \
        python3.7 python3.7-dev python3.7-venv build-essential ca-certificates wget openssh-client && \
    rm -rf /var/lib/apt/lists/*
RUN mkdir /tmp/openmpi && cd /tmp/openmpi && \
    wget -q "https://download.open-mpi.org/release/open-mpi/v${OPENMPI_VERSION%.*}/openmpi-${OPENMPI_VERSION}.tar.gz" && \
    tar xzf "openmpi-${OPENMPI_VERSION}.tar.gz" && cd "openmpi-${OPENMPI_VERSION}" && \
    ./configure --enable-orterun-prefix-by-default --prefix=/usr/local > /dev/null && \
    make -j"$(nproc)" all > /dev/null && make install > /dev/null && ldconfig && rm -rf /tmp/openmpi
# The image runs as root; Open MPI refuses that unless told twice.
ENV OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
RUN python3.7 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH VIRTUAL_ENV=/opt/venv
WORKDIR /workspace/tf_mrc
COPY requirements-tf1.txt ./
# requirements-tf1.txt with the GPU build of TF 1.13.1, plus blocksparse (fused softmax/GELU kernels).
RUN sed 's/^tensorflow==/tensorflow-gpu==/' requirements-tf1.txt > /tmp/requirements-gpu.txt && \
    pip install --no-cache-dir -U "pip<24.1" setuptools wheel && \
    pip install --no-cache-dir -r /tmp/requirements-gpu.txt blocksparse==1.13.1
# Horovod 0.19.5 selects NCCL with HOROVOD_GPU_ALLREDUCE/BROADCAST (HOROVOD_GPU_OPERATIONS came later).
RUN ldconfig /usr/local/cuda/lib64/stubs && \
    HOROVOD_GPU_ALLREDUCE=NCCL HOROVOD_GPU_BROADCAST=NCCL HOROVOD_CUDA_HOME=/usr/local/cuda \
    HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_MPI=1 HOROVOD_WITHOUT_GLOO=1 HOROVOD_WITHOUT_PYTORCH=1 \
    HOROVOD_WITHOUT_MXNET=1 pip install --no-cache-dir --no-build-isolation --no-binary horovod \
        "horovod==${HOROVOD_VERSION}" && \
    python -c "import horovod.tensorflow as hvd; assert hvd.mpi_built() and hvd.nccl_built()" && \
    ldconfig
COPY . .
ENV PYTHONPATH=/workspace/tf_mrc
CMD ["bash"]
