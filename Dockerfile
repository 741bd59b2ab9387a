# rhei_lake: `rh` in a small image.
#   docker build -t rhei-lake .
#   docker run --rm rhei-lake info --storage /data/lake
#   docker run --rm -v ./rhei.toml:/etc/rhei/config.toml -v ./data:/data rhei-lake     # rh serve --headless
#
# Stage 1 installs the package and its dependencies into a virtual environment; stage 2 copies
# only that environment onto a slim Python, so no compiler, pip cache or build file ships.

ARG PYTHON_VERSION=3.12

FROM python:${PYTHON_VERSION}-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/rhei
WORKDIR /src
COPY pyproject.toml README.md ./
COPY rhei_lake ./rhei_lake
RUN /opt/rhei/bin/pip install ".[postgres]" \
 && find /opt/rhei -depth -type d -name __pycache__ -exec rm -rf {} + \
 && rm -rf /opt/rhei/lib/python*/site-packages/pyarrow/include \
           /opt/rhei/lib/python*/site-packages/pyarrow/tests \
           /opt/rhei/lib/python*/site-packages/pip /opt/rhei/bin/pip*

FROM python:${PYTHON_VERSION}-slim
LABEL org.opencontainers.image.title="rhei_lake" \
      org.opencontainers.image.description="SQLite/PostgreSQL to Delta Lake: a time-travelling analytic mirror" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 rhei \
 && useradd --system --uid 10001 --gid rhei --home-dir /home/rhei --create-home --shell /usr/sbin/nologin rhei \
 && mkdir -p /data /etc/rhei \
 && chown rhei:rhei /data
COPY --from=build /opt/rhei /opt/rhei
ENV PATH=/opt/rhei/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER rhei
WORKDIR /data
VOLUME ["/data"]
# 9108: Prometheus metrics (metrics_port), 50051: Arrow Flight SQL (flight_port)
EXPOSE 9108 50051
# `docker stop` sends SIGTERM: rh serve stops after a final sync (give it time: --time 30)
STOPSIGNAL SIGTERM
ENTRYPOINT ["rh"]
CMD ["serve", "--headless", "--config", "/etc/rhei/config.toml"]
