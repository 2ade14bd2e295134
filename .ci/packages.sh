# Debian packages Tutti's tests need, installed when running as root, or named exactly.
# Sourced by .ci/run; kept apart so the README's commands can share it.
TUTTI_PACKAGES=()

ensure_packages() {
    local missing=()
    for p in "${TUTTI_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    else
        echo "Tutti's tests need: sudo apt-get install -y ${missing[*]}" >&2
        return 1
    fi
}
