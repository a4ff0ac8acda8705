# Vigie: `docker build -t vigie .` then
#   docker run -p 5006:5006 -v vigie-data:/data -v "$PWD/myconfig:/srv/vigie/config:ro" \
#     -v vigie-layouts:/srv/vigie/layouts -e VIGIE_INGEST_TOKEN=... vigie
# The image runs `vigie serve` on /srv/vigie/config (docker/config when nothing is
# mounted: the embedded store and the HTTP ingestion API, no broker); dashboards
# live in /srv/vigie/layouts; data, the write spool and webcam images in /data.
# The demo: docker run -p 5006:5006 vigie demo --config /srv/vigie/demo-config \
#             --address 0.0.0.0 --data-root /data
FROM python:3.11-slim

# PYTHONMALLOC=malloc: memory freed after a burst of page sessions goes back to the system (docs/concurrency.md)
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PYTHONMALLOC=malloc
WORKDIR /srv/vigie
COPY pyproject.toml README.md ./
COPY app ./app
RUN pip install .
COPY docker/config ./config
COPY config ./demo-config
COPY layouts ./layouts

RUN useradd --system --home /data vigie && mkdir -p /data && chown -R vigie /data /srv/vigie/layouts
USER vigie
VOLUME ["/data", "/srv/vigie/layouts"]
EXPOSE 5006
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5006/health', timeout=4)" || exit 1
ENTRYPOINT ["vigie"]
CMD ["serve", "--config", "/srv/vigie/config", "--address", "0.0.0.0", "--data-root", "/data"]
