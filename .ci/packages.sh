# Debian packages Tutti's build and tests need, installed when running as root, or named
# exactly otherwise. Sourced by .ci/run and scripts/test.sh.
#   libasound2-dev, pkg-config   cpal's ALSA host (build)
#   cmake                        libopus, built from source by the opus crate (build)
#   pulseaudio, pulseaudio-utils a private headless sound server for the device-path tests
#   libasound2-plugins           ALSA's PulseAudio plugin (cpal's ALSA host on a PulseAudio box)
#   cmt                          LADSPA delay lines: the calibration test hides a speaker's
#                                latency inside the sound server
#   espeak-ng                    a player's spoken status (offline speech)
#   sox, libsox-fmt-all          makes FLAC, MP3 and Ogg test files for the decoder tests
#   bc                           arithmetic in scripts/measure.sh
#   mosquitto, mosquitto-clients an external MQTT broker for the hub's tests, and the README's
#                                mosquitto_sub / mosquitto_pub examples
#   snapclient                   Snapcast's client, playing a room from the hub's --snapcast-stream (e2e)
#   python3-venv                 the Snapcast test runs the `snapcast` Python library (what Home
#                                Assistant runs) from PyPI in a venv (crates/tutti/tests/snapcast)
#   chromium                     the dashboard's tests drive the page in it (playwright-core)
#   nodejs, npm                  run playwright-core (crates/tutti/tests/browser, `npm ci`);
#                                only when no `node` is on the PATH already
#   libwebkit2gtk-4.1-dev, libgtk-3-dev, libxdo-dev, libssl-dev, libayatana-appindicator3-dev
#                                the desktop app, tutti-gui (dioxus desktop: wry, tao, muda) (build)
#   xvfb, x11-utils, imagemagick, xdotool
#                                its test: a display of its own, the window found by title,
#                                photographed, and a button clicked
TUTTI_PACKAGES=(libasound2-dev pkg-config cmake pulseaudio pulseaudio-utils libasound2-plugins cmt espeak-ng sox libsox-fmt-all bc mosquitto mosquitto-clients snapclient python3-venv chromium
    libwebkit2gtk-4.1-dev libgtk-3-dev libxdo-dev libssl-dev libayatana-appindicator3-dev xvfb x11-utils imagemagick xdotool)

ensure_packages() {
    local missing=()
    for p in "${TUTTI_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        missing+=(nodejs npm)
    fi
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" = 0 ]; then
        echo "installing: ${missing[*]}"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "Tutti needs these Debian packages; run:" >&2
        echo "  sudo apt-get install -y ${missing[*]}" >&2
        return 1
    fi
}
