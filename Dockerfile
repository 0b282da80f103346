# callvault service image: the API (`serve`) or the scheduler (`worker`).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY crypto ./crypto
COPY vault ./vault
COPY jobs ./jobs
RUN pip install --no-cache-dir . && useradd --system --uid 10001 callvault
USER callvault
EXPOSE 8080
ENTRYPOINT ["callvault"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080", "--no-scheduler"]
