# Kastell's image: the `kastell` binary (operator and stages) on a distroless base,
# running as the unprivileged user 65532.
#
#   docker build -t ghcr.io/kastell-eu/kastell:0.1.0 .

FROM rust:1.94-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p kastell \
 && cp target/release/kastell /kastell

# distroless/cc carries glibc, libgcc and libssl3 (git sync's HTTPS transport goes through
# libgit2's OpenSSL backend), which the binary links against, and nothing else: no shell,
# no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /kastell /usr/local/bin/kastell
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/kastell"]
