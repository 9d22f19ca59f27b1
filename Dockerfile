# syntax=docker/dockerfile:1
# CPU image: export, quantize and validate anywhere.   docker build -t levit-edge .
# GPU image: build and validate TensorRT engines.      docker build --target gpu -t levit-edge:gpu .
#
# The GPU stage is levit_edge.board (build-engine and engine validation: Python 3.10+, numpy, Pillow,
# TensorRT, cuda-python; no torch) on NVIDIA's TensorRT container of a stated TensorRT version. Engines are
# specific to GPU and TensorRT version: pick the base image with the TensorRT of the target.
#   TensorRT 10.3 (default; what JetPack 6.1/6.2 ship), x86-64: nvcr.io/nvidia/tensorrt:24.08-py3
#   TensorRT 11.x, x86-64: --build-arg TRT_IMAGE=nvcr.io/nvidia/tensorrt:<release with 11.x>-py3
#       --build-arg TRT_VERSION=11.<minor> --build-arg CUDA_PYTHON='cuda-python>=13,<14' (CUDA 13 builds)
#   Jetson Orin, JetPack 6 (build on the board, arm64): --build-arg TRT_IMAGE=nvcr.io/nvidia/l4t-jetpack:r36.4.0
#       (L4T r36.4: CUDA 12.6, TensorRT 10.3, Python 3.10), run with --runtime nvidia.
# The build stops if the image's TensorRT is not TRT_VERSION.
ARG TRT_IMAGE=nvcr.io/nvidia/tensorrt:24.08-py3

FROM python:3.11-slim AS cpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
WORKDIR /opt/levit-edge
RUN pip install torch==2.14.1 torchvision==0.29.1 --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY levit_edge ./levit_edge
COPY calibration ./calibration
RUN pip install .
WORKDIR /work
ENTRYPOINT ["levit-edge"]
CMD ["--help"]

FROM ${TRT_IMAGE} AS gpu
ARG TRT_VERSION=10.3
ARG CUDA_PYTHON="cuda-python>=12.6,<13"
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 PYTHONPATH=/opt/levit-edge
WORKDIR /opt/levit-edge
# tensorrt comes from the base image; the board module needs only these beside it (no torch, no pycuda).
RUN python3 -m pip install "numpy>=1.26" "pillow>=10" "${CUDA_PYTHON}"
COPY levit_edge ./levit_edge
RUN python3 -c "import sys, tensorrt; v = tensorrt.__version__; ok = v.startswith('${TRT_VERSION}.'); \
print('TensorRT', v); sys.exit(0 if ok else 'base image has TensorRT ' + v + ', expected ${TRT_VERSION}')"
WORKDIR /work
ENTRYPOINT ["python3", "-m", "levit_edge.board"]
CMD ["--help"]
