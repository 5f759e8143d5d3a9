# lakeload container images: `--target worker` (the ETL, `lakeload`) and `--target operator`
# (`lakeload-operator`). Both are slim Debian images, run as the numeric non-root user 10001,
# hold no secrets, and need no writable root filesystem: the worker spills to /tmp (TMPDIR),
# which Kubernetes mounts as an emptyDir.
#
#   docker build --target worker   -t lakeload:0.1.0 .
#   docker build --target operator -t lakeload-operator:0.1.0 .
#   docker run --rm -v $PWD/common.conf:/app/common.conf:ro lakeload:0.1.0 run
#
# The build stage compiles both programs in a Rust image. If the context holds ./prebuilt/
# with both binaries, it copies those instead; the tests build images that way (with
# RUST_IMAGE set to the plain base: nothing is compiled), on machines with no Rust image to
# pull. Either way the runtime stages below are the same.
ARG BASE_IMAGE=debian:bookworm-slim
ARG RUST_IMAGE=rust:1.95-slim-bookworm

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
RUN mkdir -p /out \
    && if [ -x prebuilt/lakeload ] && [ -x prebuilt/lakeload-operator ]; then \
         cp prebuilt/lakeload prebuilt/lakeload-operator /out/; \
       else \
         cargo build --release --locked -p lakeload -p lakeload-operator \
         && cp target/release/lakeload target/release/lakeload-operator /out/; \
       fi

FROM ${BASE_IMAGE} AS runtime
# CA certificates for HTTPS to S3 and the Kubernetes API; nothing else beyond the base.
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log \
    && groupadd --gid 10001 lakeload \
    && useradd --uid 10001 --gid 10001 --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin lakeload \
    && mkdir -p /app \
    && chown 10001:10001 /app
# Spilled rows go to TMPDIR: writable in the image, an emptyDir under readOnlyRootFilesystem.
ENV TMPDIR=/tmp
WORKDIR /app
USER 10001:10001

FROM runtime AS operator
COPY --from=build /out/lakeload-operator /usr/local/bin/lakeload-operator
ENTRYPOINT ["/usr/local/bin/lakeload-operator"]

# Last, so that a plain `docker build .` gives the worker.
FROM runtime AS worker
COPY --from=build /out/lakeload /usr/local/bin/lakeload
# `docker run … lakeload run` reads ./common.conf, i.e. /app/common.conf: mount it there.
ENTRYPOINT ["/usr/local/bin/lakeload"]
CMD ["run"]
