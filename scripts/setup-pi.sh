#!/usr/bin/env bash
# A Raspberry Pi (or any Debian machine) as a Tutti player, in one command: installs the
# package, pairs with the hub, picks the output device, writes the player's settings and
# enables its service.
#
#   sudo bash setup-pi.sh --deb tutti_0.1.0-1_arm64.deb --pair 'tutti://HUB:7481/pair/…' \
#       --source HUB:7400 [--device NAME] [--name living] [--host alsa]
#
# --dry-run prints every command and file it would run or write, and changes nothing.
# --root DIR sets up DIR as the Pi's root instead of / (a card's mounted root filesystem, or a
# test tree): the package's files are unpacked there (its maintainer scripts run on the Pi's
# first `dpkg --configure -a`), the service is enabled with `systemctl --root`, and the pairing
# is written there. Without --device it lists the devices and asks (or, with no terminal,
# takes the default).
set -euo pipefail

deb= link= source= device= name=player host=alsa root=/ dry=0 tutti=tutti
usage() {
    echo "usage: setup-pi.sh --deb PATH --pair LINK --source HOST:PORT [--device NAME] [--name NAME] [--host alsa|pulse] [--root DIR] [--dry-run] [--tutti PATH]" >&2
    exit 2
}
while [ $# -gt 0 ]; do
    case "$1" in
        --deb) deb=$2; shift 2 ;;
        --pair) link=$2; shift 2 ;;
        --source) source=$2; shift 2 ;;
        --device) device=$2; shift 2 ;;
        --name) name=$2; shift 2 ;;
        --host) host=$2; shift 2 ;;
        --root) root=$2; shift 2 ;;
        --dry-run) dry=1; shift ;;
        --tutti) tutti=$2; shift 2 ;;
        -h|--help) usage ;;
        *) echo "setup-pi.sh: unknown argument $1" >&2; usage ;;
    esac
done
[ -n "$deb" ] || { echo "setup-pi.sh: --deb: which package? (bash scripts/package.sh builds one)" >&2; usage; }
[ -n "$link" ] || { echo "setup-pi.sh: --pair: the hub's one-time link (tutti serve prints it)" >&2; usage; }
[ -n "$source" ] || { echo "setup-pi.sh: --source: the source's address, HOST:PORT" >&2; usage; }
case "$link" in tutti://*/pair/*) ;; *) echo "setup-pi.sh: --pair $link: a pairing link looks like tutti://HOST:7481/pair/ID.SECRET" >&2; exit 2 ;; esac
case "$host" in alsa|pulse) ;; *) echo "setup-pi.sh: --host $host: alsa or pulse" >&2; exit 2 ;; esac
case "$name" in *[!a-zA-Z0-9_-]*|'') echo "setup-pi.sh: --name $name: letters, digits, - and _ only" >&2; exit 2 ;; esac
[ -f "$deb" ] || [ "$dry" = 1 ] || { echo "setup-pi.sh: --deb $deb: no such file" >&2; exit 1; }
root=${root%/}
[ -n "$root" ] || root=/
at() { if [ "$root" = / ]; then echo "$1"; else echo "$root$1"; fi; }

# Runs (or, dry, prints) a command.
run() {
    printf '+ %s\n' "$*"
    [ "$dry" = 1 ] || "$@"
}
# Writes (or, dry, prints) a file.
write() {
    printf '+ write %s:\n' "$1"
    sed 's/^/    /' <<<"$2"
    if [ "$dry" = 0 ]; then
        mkdir -p "$(dirname "$1")"
        printf '%s\n' "$2" > "$1"
    fi
}

# 1. The package.
if [ "$root" = / ]; then
    [ "$dry" = 1 ] || [ "$(id -u)" = 0 ] || { echo "setup-pi.sh: run as root (sudo)" >&2; exit 1; }
    run apt-get install -y "$(realpath -m "$deb")"
    bin=/usr/bin/tutti
else
    run mkdir -p "$root"
    run dpkg-deb -x "$deb" "$root"
    # Another machine's binary may not run here: the devices are then listed on the Pi.
    bin=$tutti
fi

# 2. The output device.
if [ -z "$device" ]; then
    echo "the output devices (\`tutti devices\`):"
    if [ "$dry" = 1 ]; then
        echo "+ $bin devices"
    else
        "$bin" devices 2>&1 || true
    fi
    if [ -t 0 ] && [ "$dry" = 0 ]; then
        read -r -p "device for player $name (empty: the default): " device
    fi
    device=${device:-default}
fi

# 3. Pairing: the node's own credential, kept where the service reads it.
pairing=$(at /var/lib/tutti/pairing.json)
run mkdir -p "$(dirname "$pairing")"
run "$bin" pair "$link" --name "$name" --pairing "$pairing"
if [ "$root" = / ]; then
    run chown -R tutti:tutti /var/lib/tutti
fi

# 4. The player's settings.
write "$(at /etc/tutti/"$name".toml)" "# Written by setup-pi.sh; see /etc/tutti/player.toml for every key.
[play]
source = \"$source\"
host = \"$host\"
device = \"$device\"
name = \"$name\""

# 5. Its service.
if [ "$root" = / ]; then
    run systemctl enable --now "tutti-player@$name.service"
else
    run systemctl --root="$root" enable "tutti-player@$name.service"
fi
if [ "$dry" = 1 ]; then
    echo "(a dry run: nothing was changed)"
else
    echo "player $name: set up (source $source, $host device $device); its log: journalctl -u tutti-player@$name"
fi
