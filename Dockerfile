# syntax=docker/dockerfile:1
# CPU image: export, quantize and validate anywhere.   docker build -t levit-edge .
# GPU image: build and validate TensorRT engines.      docker build --target gpu -t levit-edge:gpu .
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

# TensorRT engines are specific to GPU and TensorRT version: build this stage from the TensorRT container
# that matches the target (JetPack 6 / TensorRT 10.3 on Jetson: use an l4t TensorRT image instead).
FROM nvcr.io/nvidia/tensorrt:25.01-py3 AS gpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
WORKDIR /opt/levit-edge
RUN pip install torch==2.14.1 torchvision==0.29.1 --index-url https://download.pytorch.org/whl/cpu \
    && pip install pycuda
COPY pyproject.toml README.md ./
COPY levit_edge ./levit_edge
COPY calibration ./calibration
# tensorrt comes from the base image; install the package without pulling another copy of it.
RUN pip install . && python -c "import tensorrt, levit_edge; print('TensorRT', tensorrt.__version__)"
WORKDIR /work
ENTRYPOINT ["levit-edge"]
CMD ["build-engine", "--help"]
