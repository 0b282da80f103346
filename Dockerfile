# callvault service image: the API (`serve`), the scheduler (`worker`) or the one-shot `init`.
# No secret is baked in: every credential arrives at run time, from the environment or from a
# file named by CALLVAULT_<NAME>_FILE (see docker-compose.yml and README "Production").
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY crypto ./crypto
COPY vault ./vault
COPY jobs ./jobs
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
COPY --from=build /install /usr/local
# A fixed, unprivileged uid/gid that owns only its data directory (a volume in compose); the
# code under /usr/local stays root-owned and read-only to it.
RUN groupadd --system --gid 10001 callvault \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/callvault \
       --shell /usr/sbin/nologin callvault \
    && install -d -o callvault -g callvault -m 0700 /var/lib/callvault /var/lib/callvault/admin
USER 10001:10001
WORKDIR /var/lib/callvault
ENV PYTHONUNBUFFERED=1 \
    HOME=/var/lib/callvault \
    TMPDIR=/var/lib/callvault
VOLUME ["/var/lib/callvault"]
EXPOSE 8080
# Ready means: the database, the store and the key provider answer (GET /readyz).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8080/readyz', timeout=4)"]
ENTRYPOINT ["callvault"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080", "--no-scheduler"]
