# Helpers shared by the measurement scripts (sourced, not run).

# CPU time of process $1 so far, in clock ticks (user + system); 0 once it is gone.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
# Resident memory of process $1, kB; 0 once it is gone.
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# snapserver_conf DIR FIFO NAME LOG_LEVEL [BUFFER_MS]: a snapserver config in DIR/snapserver.conf
# that serves 48 kHz 16-bit stereo PCM from the pipe FIFO on 127.0.0.1:1704 (no HTTP, no
# JSON-RPC), with a buffer of BUFFER_MS (snapserver's default, 1000, when not given).
snapserver_conf() {
    local dir=$1 fifo=$2 name=$3 level=$4 buffer=${5:-}
    {
        printf '[server]\ndatadir = %s\n[http]\nenabled = false\n[tcp]\nenabled = false\n' "$dir"
        printf '[stream]\nbind_to_address = 127.0.0.1\nport = 1704\n'
        printf 'source = pipe://%s?name=%s&sampleformat=48000:16:2\ncodec = pcm\n' "$fifo" "$name"
        [ -n "$buffer" ] && printf 'buffer = %s\n' "$buffer"
        printf '[logging]\nfilter = *:%s\n' "$level"
    } > "$dir/snapserver.conf"
}
