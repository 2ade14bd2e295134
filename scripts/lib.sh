# Helpers shared by the measurement scripts (sourced, not run).

# CPU time of process $1 so far, in clock ticks (user + system); 0 once it is gone.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
# Every thread of process $1, one line each: tid, name, CPU ticks, context switches
# (voluntary + involuntary: each is a wake-up or a preemption).
thread_ticks() {
    local t
    for t in /proc/"$1"/task/*; do
        [ -r "$t/stat" ] || continue
        # The name may hold spaces: fields after the closing parenthesis (utime is the 12th).
        awk -v tid="${t##*/}" -v comm="$(tr ' ' '_' < "$t/comm")" \
            'NR == FNR { n = split($0, a, ") "); split(a[n], f, " "); ticks = f[12] + f[13]; next }
             /ctxt_switches/ { c += $2 } END { print tid, comm, ticks, c }' "$t/stat" "$t/status" 2>/dev/null
    done
}
# thread_rates BEFORE AFTER SECONDS TICK: per thread name (summed), % of a core and context
# switches a second between two thread_ticks snapshots.
thread_rates() {
    awk -v secs="$3" -v tick="$4" 'NR == FNR { t0[$1] = $3; c0[$1] = $4; next }
        { cpu[$2] += ($3 - t0[$1]) * 100 / tick / secs; sw[$2] += ($4 - c0[$1]) / secs }
        END { for (n in cpu) printf "    %-22s %6.2f %% %7.0f switches/s\n", n, cpu[n], sw[n] }' "$1" "$2" | sort -k2 -rn
}
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
