#!/usr/bin/env bash
# Builds Tutti's Debian package into target/debian/ and prints its path as the last line.
#
#   bash scripts/package.sh                      # this machine's architecture, from a release build
#   bash scripts/package.sh --arch arm64 --binary PATH/tutti   # another architecture's binary
#   bash scripts/package.sh --test               # then, as root: install, upgrade, purge it here
#
# What it holds: /usr/bin/tutti; the systemd units tutti-hub.service, tutti-player@.service and
# tutti-source@.service (user `tutti`, group `audio`, Restart=on-failure, state in
# /var/lib/tutti); /etc/tutti/{hub,player,source}.toml and /etc/default/tutti (conffiles: an
# upgrade keeps your edits); maintainer scripts that add the `tutti` system user, keep
# /var/lib/tutti on upgrade and remove it on purge. Needs dpkg-deb (dpkg) and, for the
# dependencies of a native build, objdump (binutils).
set -euo pipefail
cd "$(dirname "$0")/.."

native=$(dpkg --print-architecture)
arch=$native
binary=
revision=1
test=0
while [ $# -gt 0 ]; do
    case "$1" in
        --arch) arch=$2; shift 2 ;;
        --binary) binary=$2; shift 2 ;;
        --revision) revision=$2; shift 2 ;;
        --test) test=1; shift ;;
        *) echo "package.sh: unknown argument $1 (--arch A, --binary PATH, --revision N, --test)" >&2; exit 2 ;;
    esac
done
case "$arch" in
    amd64|arm64|armhf) ;;
    *) echo "package.sh: --arch $arch: use amd64, arm64 or armhf" >&2; exit 2 ;;
esac

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
[ -n "$version" ] || { echo "package.sh: no version in Cargo.toml's [workspace.package]" >&2; exit 1; }
full="$version-$revision"

if [ -z "$binary" ]; then
    if [ "$arch" != "$native" ]; then
        echo "package.sh: --arch $arch is not this machine's: give its binary with --binary" >&2
        exit 2
    fi
    # shellcheck source=/dev/null
    source .ci/packages.sh
    ensure_packages
    cargo build --release --locked -q -p tutti
    binary="${CARGO_TARGET_DIR:-target}/release/tutti"
fi
[ -x "$binary" ] || { echo "package.sh: $binary is not an executable" >&2; exit 1; }

out=target/debian
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
chmod 0755 "$stage"
install -d "$stage/DEBIAN" "$stage/usr/bin" "$stage/lib/systemd/system" "$stage/etc/tutti" \
    "$stage/etc/default" "$stage/usr/share/doc/tutti"
install -m 0755 "$binary" "$stage/usr/bin/tutti"
if [ "$arch" = "$native" ] && command -v strip >/dev/null; then
    strip --strip-debug "$stage/usr/bin/tutti"
fi
install -m 0644 packaging/systemd/*.service "$stage/lib/systemd/system/"
install -m 0644 packaging/etc/tutti/*.toml "$stage/etc/tutti/"
install -m 0644 packaging/etc/default/tutti "$stage/etc/default/tutti"
install -m 0644 README.md "$stage/usr/share/doc/tutti/README.md"
printf 'Tutti\nLicense: MIT OR Apache-2.0 (see the source repository)\nVendored: cpal, pulseaudio, rumqttd (their own licenses, vendor/ in the source)\n' \
    > "$stage/usr/share/doc/tutti/copyright"
install -m 0755 packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm "$stage/DEBIAN/"
(cd "$stage" && find etc -type f | sed 's|^|/|' | sort) > "$stage/DEBIAN/conffiles"

# Dependencies: the shared libraries the binary needs, and the newest glibc symbol it uses.
depends="adduser"
if command -v objdump >/dev/null && objdump -p "$stage/usr/bin/tutti" >/dev/null 2>&1; then
    needed=$(objdump -p "$stage/usr/bin/tutti" | awk '/NEEDED/ {print $2}')
    glibc=$(objdump -T "$stage/usr/bin/tutti" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -n1)
    depends="$depends, libc6 (>= ${glibc:-2.31})"
    for lib in $needed; do
        case "$lib" in
            libasound.so.2) depends="$depends, libasound2 (>= 1.0.16) | libasound2t64" ;;
            libgcc_s.so.1) depends="$depends, libgcc-s1" ;;
            libopus.so.0) depends="$depends, libopus0" ;;
            libc.so.6|libm.so.6|libdl.so.2|libpthread.so.0|librt.so.1|ld-linux*) ;;
            *) echo "package.sh: the binary needs $lib, which this script cannot map to a package" >&2; exit 1 ;;
        esac
    done
else
    # Another architecture's binary, or no objdump: what every Tutti build links.
    depends="$depends, libc6 (>= 2.31), libgcc-s1, libasound2 (>= 1.0.16) | libasound2t64"
fi
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat > "$stage/DEBIAN/control" <<EOF
Package: tutti
Version: $full
Architecture: $arch
Maintainer: Tutti developers <tutti@example.invalid>
Installed-Size: $size
Depends: $depends
Section: sound
Priority: optional
Homepage: https://example.invalid/tutti
Description: plays audio over a local network in time
 One source heard on many speakers in sync, within microseconds, and many
 microphones (phones too) mixed live into one room. Hub, player and source
 run as systemd services: tutti-hub, tutti-player@NAME, tutti-source@NAME,
 each NAME reading /etc/tutti/NAME.toml.
EOF
(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -print | sed 's|^\./||' | sort | xargs md5sum) \
    > "$stage/DEBIAN/md5sums"
mkdir -p "$out"
deb="$out/tutti_${full}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null

if [ "$test" = 1 ]; then
    [ "$(id -u)" = 0 ] || { echo "package.sh --test: run as root (it installs the package)" >&2; exit 1; }
    [ "$arch" = "$native" ] || { echo "package.sh --test: $arch is not this machine's architecture" >&2; exit 1; }
    say() { printf '\n$ %s\n' "$*"; "$@"; }
    dpkg -s tutti >/dev/null 2>&1 && dpkg --purge tutti >/dev/null
    say dpkg -i "$deb"
    say tutti --version
    say id tutti
    say stat -c '%U:%G %a %n' /var/lib/tutti
    say dpkg -L tutti
    # Verify the units as installed; the templates through an instance of each.
    verify=$(mktemp -d)
    cp /lib/systemd/system/tutti-hub.service "$verify/"
    cp /lib/systemd/system/tutti-player@.service "$verify/tutti-player@living.service"
    cp /lib/systemd/system/tutti-source@.service "$verify/tutti-source@tv.service"
    say systemd-analyze verify "$verify"/*.service
    rm -rf "$verify"
    echo "a pairing" > /var/lib/tutti/pairing.json
    echo "# edited" >> /etc/tutti/player.toml
    # An upgrade: the next revision of the same build.
    bash "$0" --arch "$arch" --binary "$binary" --revision $((revision + 1)) >/dev/null
    say dpkg -i "$out/tutti_${version}-$((revision + 1))_${arch}.deb"
    say dpkg-query -W tutti
    say cat /var/lib/tutti/pairing.json
    say tail -n1 /etc/tutti/player.toml
    say dpkg --purge tutti
    for gone in /var/lib/tutti /etc/tutti /usr/bin/tutti /lib/systemd/system/tutti-hub.service; do
        [ ! -e "$gone" ] || { echo "package.sh --test: $gone is still there after purge" >&2; exit 1; }
    done
    ! getent passwd tutti >/dev/null || { echo "package.sh --test: user tutti is still there after purge" >&2; exit 1; }
    printf '\ninstalled, upgraded (state and an edited conffile kept), purged (state, config and user gone)\n'
fi
echo "$deb"
