#!/usr/bin/env bash
# Assembles the container's root filesystem: the stripped cryptoworker binary, the healthcheck
# probe, exactly the shared libraries `ldd` names for them, a passwd/group with the unprivileged
# user 65532 (cryptoworker) and its writable spool directory. Nothing else: no shell, no package
# manager. Used by the Dockerfile's build stage and by scripts/test-container (which builds the
# binary on the host, because base images cannot be pulled on the development machines).
#
#   deploy/container/rootfs.sh BINARY OUTDIR [TARBALL]
#
# With TARBALL, also writes OUTDIR as a tar archive with numeric owners (for `ADD rootfs.tar /`,
# which keeps the spool directory's owner). Run as root (the spool directory is chowned to 65532).
set -euo pipefail

bin=${1:?usage: rootfs.sh BINARY OUTDIR [TARBALL]}
out=${2:?usage: rootfs.sh BINARY OUTDIR [TARBALL]}
tarball=${3:-}
here=$(cd "$(dirname "$0")" && pwd)
uid=65532

if [ "$(id -u)" != 0 ]; then
  echo "rootfs.sh: run as root (the spool directory must belong to uid $uid)" >&2
  exit 1
fi

rm -rf "$out"
mkdir -p "$out/usr/local/bin" "$out/etc" "$out/tmp" "$out/var/lib/cryptoworker/spool"

install -m 0755 "$bin" "$out/usr/local/bin/cryptoworker"
strip --strip-all "$out/usr/local/bin/cryptoworker"

# The HEALTHCHECK probe (the binary has no healthcheck subcommand; a scratch image has no curl).
rustc --edition 2021 -C opt-level=s -C panic=abort -C strip=symbols \
  "$here/healthcheck.rs" -o "$out/usr/local/bin/healthcheck"

# Exactly the shared objects the two binaries load (glibc, libgcc_s, the loader), at the paths
# the loader looks for them.
for exe in "$out/usr/local/bin/cryptoworker" "$out/usr/local/bin/healthcheck"; do
  ldd "$exe" | awk '/=>/ { print $3 } /^\t\// { print $1 }'
done | sort -u | while read -r lib; do
  [ -n "$lib" ] || continue
  mkdir -p "$out$(dirname "$lib")"
  cp -L "$lib" "$out$lib"
done

cat >"$out/etc/passwd" <<PASSWD
root:x:0:0:root:/root:/sbin/nologin
cryptoworker:x:$uid:$uid:cryptoworker:/var/lib/cryptoworker:/sbin/nologin
PASSWD
cat >"$out/etc/group" <<GROUP
root:x:0:
cryptoworker:x:$uid:
GROUP
# glibc (2.34+) resolves through its built-in files and dns modules; the engine mounts
# /etc/hosts and /etc/resolv.conf.
echo 'hosts: files dns' >"$out/etc/nsswitch.conf"

chmod 1777 "$out/tmp"
chown "$uid:$uid" "$out/var/lib/cryptoworker" "$out/var/lib/cryptoworker/spool"
chmod 0750 "$out/var/lib/cryptoworker" "$out/var/lib/cryptoworker/spool"

if [ -n "$tarball" ]; then
  tar --numeric-owner --sort=name -C "$out" -cf "$tarball" .
fi
echo "rootfs.sh: $(du -sh "$out" | cut -f1) in $out"
