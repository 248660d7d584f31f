# agentrun server: a slim, non-root image running `agentrun serve`: gRPC on 0.0.0.0:50051, the
# HTTP port (Connect JSON, gRPC-Web and the web console) on 0.0.0.0:8080, over an SQLite file
# in the /data volume (set AGENTRUN_DATABASE_URL for PostgreSQL). Auth is off until API keys
# are configured (AGENTRUN_API_KEYS or a config file): publish the ports accordingly.
#   docker build -t agentrun .
#   docker run -p 50051:50051 -p 8080:8080 -v agentrun-data:/data agentrun
# The wheel carries the console's built assets (agentrun/server/console/static, package-data)
# and the migrations; only the runtime dependencies are installed, never the test extras.
# Optional runtime extras (the Kafka event bus, MCP tool servers) are left out unless asked for:
#   docker build --build-arg EXTRAS=kafka,mcp -t agentrun .

FROM python:3.11-slim AS build
ARG EXTRAS=""
WORKDIR /src
COPY pyproject.toml README.md ./
COPY agentrun ./agentrun
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".${EXTRAS:+[$EXTRAS]}"

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    AGENTRUN_LISTEN=0.0.0.0:50051 \
    AGENTRUN_HTTP_LISTEN=0.0.0.0:8080 \
    AGENTRUN_ADDRESS=127.0.0.1:50051 \
    AGENTRUN_DATABASE_URL=sqlite:////data/agentrun.db
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl \
    && rm -rf /wheels \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin agentrun \
    && mkdir -p /data \
    && chown agentrun:agentrun /data
USER agentrun
WORKDIR /data
VOLUME ["/data"]
EXPOSE 50051 8080
# grpc.health.v1 Check through the same grpcio the server uses: exit 0 only when SERVING
# (NOT_SERVING while draining after SIGTERM).
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["agentrun", "health"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["agentrun"]
CMD ["serve"]
