# chainlog server image: build in one stage, run in a small one as a non-root user.
#   docker build -t chainlog .
#   docker run -d --name chainlog -p 3322:3322 -v chainlog-data:/var/lib/chainlog \
#       -e CHAINLOG_ADMIN_PASSWORD='a long password' chainlog
# docs/operations.md ("Packaging") has the rest.

FROM rust:1.89-slim-bookworm AS build
WORKDIR /src
# The proto files are compiled by a pure-Rust compiler (protox): no protoc needed.
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto proto
COPY src src
COPY benches benches
COPY tools tools
COPY README.md ./
RUN cargo build --release --locked --bins \
 && install -m 0755 target/release/chainlogd target/release/chainlog \
        target/release/chainlog-replicator /usr/local/bin/

FROM debian:bookworm-slim
RUN groupadd --system --gid 10001 chainlog \
 && useradd --system --uid 10001 --gid chainlog --home-dir /var/lib/chainlog \
        --shell /usr/sbin/nologin chainlog \
 && install -d -m 0700 -o chainlog -g chainlog /var/lib/chainlog
COPY --from=build /usr/local/bin/chainlogd /usr/local/bin/chainlog \
     /usr/local/bin/chainlog-replicator /usr/local/bin/
USER chainlog:chainlog
VOLUME ["/var/lib/chainlog"]
# gRPC, and the metrics listener (/metrics, /healthz, /readyz).
EXPOSE 3322 9497
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/chainlogd", "--data-dir", "/var/lib/chainlog", "--listen", "0.0.0.0:3322", "--metrics-listen", "0.0.0.0:9497"]
