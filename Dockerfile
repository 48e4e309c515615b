# syntax=docker/dockerfile:1
# One image for every Custos process; docker-compose.yml gives each service its command, database role
# and secrets. Two stages: `build` has the compilers pip may need; the final image has the virtual
# environment and the code, runs as the unprivileged user `custos` and holds no compiler, test or
# lint tool (requirements.txt's "development and tests" part is not installed).
#
#   docker-compose build                    # or: docker build -t custos .
#   docker build --build-arg ML_ENABLED=0 -t custos .   # no PyTorch (the t3.micro profile)
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# 1: PyTorch (CPU wheel) and the rest of requirements-ml.txt for the ml worker; 0: the core only.
ARG ML_ENABLED=1
# PyTorch's CPU-only wheels: a plain `pip install torch` on Linux pulls several GB of CUDA libraries.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY requirements.txt requirements-ml.txt constraints.txt ./
# The runtime: requirements.txt down to its "development and tests" line.
RUN sed '/^# --- development and tests/,$d' requirements.txt > requirements-runtime.txt \
 && pip install -r requirements-runtime.txt -c constraints.txt
RUN case "$(echo "$ML_ENABLED" | tr A-Z a-z)" in \
      0|false|no|off|n) echo "ML_ENABLED=$ML_ENABLED: no PyTorch" ;; \
      *) pip install --no-deps "$(grep '^torch==' requirements-ml.txt)" --index-url "$TORCH_INDEX_URL" \
         && pip install -r requirements-ml.txt -c constraints.txt ;; \
    esac

FROM ${PYTHON_IMAGE}
ARG ML_ENABLED=1
# Runtime Debian packages some deployments need, e.g. `softhsm2` or `opensc` (a PKCS#11 module for
# the signer); none by default.
ARG EXTRA_APT_PACKAGES=""
RUN if [ -n "$EXTRA_APT_PACKAGES" ]; then \
        apt-get update \
     && apt-get install -y --no-install-recommends $EXTRA_APT_PACKAGES \
     && rm -rf /var/lib/apt/lists/*; \
    fi \
 && groupadd --system --gid 10001 custos \
 && useradd --system --uid 10001 --gid custos --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin custos
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# The code belongs to root and is read-only for custos; only var/ (keystore, ML models) is writable.
COPY . /app
RUN python -m compileall -q /app/apps /app/project /app/celery_app.py \
 && mkdir -p /app/var/keystore /app/var/ml \
 && chown -R custos:custos /app/var \
 && chmod 0700 /app/var/keystore
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DJANGO_SETTINGS_MODULE=project.settings.production \
    ML_ENABLED=${ML_ENABLED}
USER custos
EXPOSE 8000
ENTRYPOINT ["/app/deploy/docker/entrypoint.sh"]
CMD ["gunicorn", "project.wsgi", "--bind", "0.0.0.0:8000", "--worker-class", "gthread", "--threads", "8"]
