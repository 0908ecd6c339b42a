# streamapp worker image: `docker build -t streamapp:0.1.0 .` (k8s/README.md#image)
#
# Two stages: the first builds streamapp's wheel and installs it with its dependencies into a
# venv; the second copies only that venv onto a clean base. No compiler, pip or sources in the
# result. Tests: tests/deploy/test_dockerfile.py (static), tests/deploy/test_image.py (built with
# buildah on a Debian base, run in podman against Kafka).
#
# PYTHON_VERSION may be 3.11, 3.12 or 3.13 (pyproject's requires-python); docs/benchmarks.md
# shows why 3.13 suits tree-heavy models best. BASE_IMAGE replaces the official slim Python (and
# PYTHON_VERSION), e.g. with tools/container/base.sh's Debian bookworm (python3 in /usr/bin,
# python3-venv, no pip): both stages use it, as the venv links the base's interpreter. Behind a
# proxy that re-signs HTTPS, `--secret id=extra_ca,src=bundle.pem` adds CAs for pip, in no layer.
ARG PYTHON_VERSION=3.11
ARG BASE_IMAGE=python:${PYTHON_VERSION}-slim

FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
# Only what the wheel is built from (see .dockerignore): the package and its metadata.
COPY pyproject.toml README.md ./
COPY streamapp ./streamapp
# `python3` and a pip of its own (ensurepip in a throwaway venv): a base may have neither `python`
# nor pip. That pip builds the wheel and installs it into /opt/streamapp, a venv without pip.
RUN --mount=type=secret,id=extra_ca \
    if [ -s /run/secrets/extra_ca ]; then \
        cat /etc/ssl/certs/ca-certificates.crt /run/secrets/extra_ca > /tmp/ca.pem \
        && export PIP_CERT=/tmp/ca.pem; \
    fi \
    && python3 -m venv /tmp/pip \
    && python3 -m venv --without-pip /opt/streamapp \
    && /tmp/pip/bin/pip wheel --no-deps --wheel-dir /tmp/wheels . \
    && /tmp/pip/bin/pip --python /opt/streamapp/bin/python install /tmp/wheels/streamapp-*.whl \
    && rm -rf /tmp/pip /tmp/wheels /tmp/ca.pem \
    && /opt/streamapp/bin/streamapp settings > /dev/null

FROM ${BASE_IMAGE}
# A fixed numeric uid/gid: Kubernetes' runAsNonRoot can only verify a numeric USER, and the
# pod's fsGroup (k8s/base/statefulset.yaml) makes the data volume writable for it.
RUN groupadd --system --gid 10001 streamapp \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /var/lib/streamapp --shell /usr/sbin/nologin streamapp \
    && mkdir -p /var/lib/streamapp \
    && chown 10001:10001 /var/lib/streamapp
COPY --from=build /opt/streamapp /opt/streamapp
ENV PATH=/opt/streamapp/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    STREAMAPP_DATADIR=/var/lib/streamapp/data \
    STREAMAPP_WEB_BIND=0.0.0.0
USER 10001:10001
WORKDIR /var/lib/streamapp
EXPOSE 6066
# Exec form: the worker is PID 1 and gets the SIGTERM itself, which Faust turns into a warm
# shutdown (finish the batch, flush predictions, commit, leave the group). The same command as
# the README's: `streamapp worker -l info`, settings from STREAMAPP_* variables.
ENTRYPOINT ["streamapp"]
CMD ["worker", "-l", "info"]
