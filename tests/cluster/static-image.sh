#!/usr/bin/env bash
# A one-binary container image from a C file, for the test cluster (no registry is reachable):
# the file is compiled static into /NAME (NAME = the file's base name) and packed as a
# docker-archive whose entrypoint is /NAME, ready for `ctr images import`.
#
#   tests/cluster/static-image.sh SRC.c TAG OUT.tar      e.g. pause.c localhost/pause:dev
set -euo pipefail
src="$1"; tag="$2"; out="$3"
name="$(basename "$src" .c)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/rootfs"
gcc -static -O2 -s -o "$work/rootfs/$name" "$src"
tar -C "$work/rootfs" -cf "$work/layer.tar" "$name"
layer_sha="$(sha256sum "$work/layer.tar" | cut -d' ' -f1)"
cat >"$work/config.json" <<JSON
{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/$name"]},"rootfs":{"type":"layers","diff_ids":["sha256:$layer_sha"]}}
JSON
config_sha="$(sha256sum "$work/config.json" | cut -d' ' -f1)"
mv "$work/layer.tar" "$work/$layer_sha.tar"; mv "$work/config.json" "$work/$config_sha.json"
printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["%s.tar"]}]\n' "$config_sha" "$tag" "$layer_sha" >"$work/manifest.json"
tar -C "$work" -cf "$out" manifest.json "$config_sha.json" "$layer_sha.tar"
