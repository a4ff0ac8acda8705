# Vigie: `docker build -t vigie .` then
#   docker run -p 5006:5006 -v vigie-data:/data -v $PWD/myconfig:/config:ro \
#     -e VIGIE_INGEST_TOKEN=... vigie
# The image runs `vigie serve` on the config mounted at /config (the shipped
# demo config when none is mounted); data and the write spool live in /data.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /opt/vigie
COPY pyproject.toml README.md ./
COPY app ./app
RUN pip install .
COPY config /config
COPY layouts /opt/vigie/layouts

RUN useradd --system --home /data vigie && mkdir -p /data && chown vigie /data
USER vigie
VOLUME /data
EXPOSE 5006
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:5006/health', timeout=4)" || exit 1
ENTRYPOINT ["vigie"]
CMD ["serve", "--config", "/config", "--address", "0.0.0.0", "--data-root", "/data"]
