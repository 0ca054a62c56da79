#!/usr/bin/env bash
# Builds the images Berth's tests and demo run, from Debian's busybox-static
# (no registry is reachable from the machines Berth is tested on):
#   berth-test/busybox:latest   a shell and the usual tools, nothing else
# Idempotent: an image that exists is left alone.
set -euo pipefail
image=berth-test/busybox:latest
if docker image inspect "$image" >/dev/null 2>&1; then
  exit 0
fi
[ -x /bin/busybox ] || { echo "test-images: /bin/busybox is missing (apt-get install busybox-static)" >&2; exit 1; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cp /bin/busybox "$dir/busybox"
cat > "$dir/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
CMD ["sh"]
DOCKERFILE
docker build -q -t "$image" "$dir" >/dev/null
echo "test-images: built $image"
