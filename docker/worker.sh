#!/bin/bash
# crater-worker: the loop inside every slot container (its entrypoint, PID 1).
#
# It reads jobs from stdin and writes everything a job prints to stdout, one job at a time, for
# as long as the container lives. The agent on the other end never talks to a shell: only to this
# loop, over this protocol.
#
#   stdin:  job NONCE TOOL TARGET TIMEOUT_SECS ARCHIVE_BYTES PREPARED\n  then ARCHIVE_BYTES bytes: a
#           gzip'd tar whose one top directory is the crate (a .crate file from crates.io is one).
#           PREPARED=1 (offline builds): no archive follows; `crater-worker --fetch` already put
#           the crate in /build and its dependencies in cargo's home, and nothing is downloaded.
#   stdout: the job's terminal output, then a line
#           @@crater-end NONCE STEP EXIT TIMED_OUT OOM PEAK_BYTES
#           STEP is the step that failed ("-" when all passed), EXIT its exit status, TIMED_OUT
#           and OOM 0|1, PEAK_BYTES the peak memory of the container during the job.
#
# NONCE is fresh for every job and lives only in this shell's memory: it is in no environment
# variable, argument or file a crate's code can read, so crate output cannot forge the end line.
#
# Everything in the container but this loop belongs to the current job, so after every step the
# loop kills every other process (`kill -KILL -1` spares only PID 1): a job's daemons, fork bombs
# and stragglers never reach the next job.
#
# To add a tool: write a `tool_NAME` function below (and `probe_NAME` if it needs something the
# image may lack) and add the name to `Tool` in proto/src/tool.rs. A step's name says which
# verdict its failure gets: "prepare" -> prepare-fail, "build" -> build-fail, "test" -> test-fail.
set -u
shopt -s nullglob
exec 2>&1

export CARGO_HOME=${CARGO_HOME:-/cargo}
export CARGO_TERM_COLOR=always CARGO_INCREMENTAL=0 RUST_BACKTRACE=1 TERM=xterm-256color
if [ -f /etc/crater/ca-certificates.crt ]; then
    # The host's CA bundle, so a TLS-inspecting proxy between us and crates.io is trusted.
    export CARGO_HTTP_CAINFO=/etc/crater/ca-certificates.crt SSL_CERT_FILE=/etc/crater/ca-certificates.crt
fi
BASE_RUSTFLAGS="--cap-lints=warn -Aunexpected-cfgs"
MIRI_SYSROOT_DIR=/tmp/.miri-sysroot
# Tools installed beside the toolchain (cargo-nextest), when the agent mounts them.
[ -d /opt/crater-tools ] && export PATH="$PATH:/opt/crater-tools"

# The container's memory cgroup (v1 or v2): its OOM-kill counter tells one job's OOM from the
# last one's (the container's own OOM flag stays set forever), its usage gives the job's peak.
if [ -r /sys/fs/cgroup/memory/memory.oom_control ]; then
    OOM_EVENTS=/sys/fs/cgroup/memory/memory.oom_control
    MEMORY_USAGE=/sys/fs/cgroup/memory/memory.usage_in_bytes
elif [ -r /sys/fs/cgroup/memory.events ]; then
    OOM_EVENTS=/sys/fs/cgroup/memory.events
    MEMORY_USAGE=/sys/fs/cgroup/memory.current
else
    OOM_EVENTS=/dev/null MEMORY_USAGE=/dev/null
fi

oom_kills() {
    local key value
    while read -r key value; do
        [ "$key" = oom_kill ] && { echo "$value"; return; }
    done <"$OOM_EVENTS"
    echo 0
}

# Samples the memory usage four times a second into PEAK_FILE, without forking per sample (a
# fork bomb must not turn the sampler into a busy loop).
start_sampler() {
    (
        exec {tick}<>"$TICK_FIFO"
        peak=$(cat "$PEAK_FILE" 2>/dev/null || echo 0)
        while :; do
            read -r usage <"$MEMORY_USAGE" || usage=0
            if ((usage > peak)); then
                peak=$usage
                echo "$peak" >"$PEAK_FILE"
            fi
            read -r -t 0.25 -u "$tick"
        done
    ) &
    disown $! # it is killed with the job's processes; bash need not report that in the log
}

# Kills every process but this loop; repeated, as a fork bomb may fork while we kill.
kill_the_rest() {
    local i
    for i in 1 2 3 4 5 6 7 8 9 10; do
        kill -KILL -1 2>/dev/null || return 0
    done
}

# run_step NAME COMMAND...: run COMMAND under a pseudo-terminal (128x64, so colours and cargo's
# progress survive) with the job's wall-clock limit. Records the first failure in FAILED_STEP.
run_step() {
    local name=$1
    shift
    printf '\033[1;36m$ %s\033[0m\n' "$*"
    local started=$SECONDS quoted ooms_before
    quoted=$(printf '%q ' "$@")
    ooms_before=$(oom_kills)
    start_sampler
    # `timeout` is the session leader inside the pty, so on expiry it signals the whole
    # foreground process group (cargo, rustc, test binaries), not just its child. The job's
    # processes volunteer to be the OOM killer's first choice, before this loop.
    script --quiet --flush --return --command \
        "echo 1000 >/proc/self/oom_score_adj; stty cols 128 rows 64 2>/dev/null; exec nice -n 19 timeout --kill-after=10s ${TIMEOUT}s $quoted" \
        /dev/null </dev/null &
    local pty=$!
    # If something the job left keeps the pty open after `timeout` gave up, end the step anyway.
    (read -r -t $((TIMEOUT + 30)) <>"$TICK_FIFO"; kill -KILL "$pty" 2>/dev/null) &
    disown $!
    wait "$pty"
    local code=$?
    kill_the_rest # the job's stragglers, the sampler and the watchdog
    wait 2>/dev/null
    if [ "$(oom_kills)" != "$ooms_before" ]; then
        OOM=1
    fi
    if [ "$code" != 0 ]; then
        FAILED_STEP=$name
        EXIT_CODE=$code
        if { [ "$code" = 124 ] || [ "$code" = 137 ]; } && [ $((SECONDS - started)) -ge "$TIMEOUT" ]; then
            TIMED_OUT=1
        fi
        return 1
    fi
}

# The crate's own feature choices for documentation and the playground, as the seed reads them:
# [package.metadata.docs.rs], [package.metadata.docs] rs = ..., [package.metadata.playground].
feature_args() {
    cargo metadata --no-deps --format-version 1 2>/dev/null | jq -r --arg manifest "$PWD/Cargo.toml" '
        .packages[] | select(.manifest_path == $manifest) | (.metadata // {}) |
        [.playground, .["docs.rs"], .docs.rs] | map(select(type == "object")) as $m |
        ([$m[] | .features // [] | .[]] | unique) as $features |
        (if ($features | length) > 0 then "--features=" + ($features | join(",")) else empty end),
        (if any($m[]; .["all-features"] == true) then "--all-features" else empty end),
        (if any($m[]; .["no-default-features"] == true) then "--no-default-features" else empty end)'
}

# Resolves the newest compatible dependencies (as the seed does) and downloads them, so a crate
# that cannot be resolved is a prepare failure, not a build failure.
fetch_dependencies() {
    run_step prepare cargo update --quiet && run_step prepare cargo fetch --quiet
}

# Steps every tool starts with. Offline, the dependencies are already here.
prepare() {
    if [ "${CARGO_NET_OFFLINE:-}" != true ]; then
        fetch_dependencies || return 1
    fi
    mapfile -t FEATURES < <(feature_args)
    ((${#FEATURES[@]} == 0)) || printf '\033[1m[crater-at-home] features: %s\033[0m\n' "${FEATURES[*]}"
}

tool_check() {
    prepare && run_step build cargo check --target="$TARGET" "${FEATURES[@]}"
}

tool_build() {
    # As the seed: the test binaries, optimised, with debug assertions.
    export RUSTFLAGS="$RUSTFLAGS -Copt-level=3 -Cdebug-assertions=yes"
    prepare && run_step build cargo test --no-run --target="$TARGET" "${FEATURES[@]}"
}

tool_test() {
    prepare &&
        run_step build cargo test --no-run --target="$TARGET" "${FEATURES[@]}" &&
        run_step test cargo test --no-fail-fast --target="$TARGET" "${FEATURES[@]}"
}

probe_asan() {
    rustc -V | grep -q nightly || { echo "needs a nightly toolchain (-Zsanitizer)"; return 1; }
    local libdir
    libdir=$(rustc --print target-libdir)
    [ -n "$(echo "$libdir"/librustc-nightly_rt.asan.*)" ] ||
        { echo "the toolchain has no AddressSanitizer runtime in $libdir"; return 1; }
}

tool_asan() {
    # The seed's settings: a huge stack (ASan frames are large), no leak checks, strict pointers.
    export RUSTFLAGS="$RUSTFLAGS -Zsanitizer=address -Cdebuginfo=1 -Zstrict-init-checks=no"
    export RUSTDOCFLAGS="$RUSTFLAGS" RUST_MIN_STACK=1073741824
    export ASAN_OPTIONS=color=always:detect_leaks=0:detect_stack_use_after_return=true:allocator_may_return_null=1:detect_invalid_pointer_pairs=2
    ulimit -s 1048576 2>/dev/null || ulimit -s unlimited 2>/dev/null
    # Without a symbolizer the reports have bare addresses and say nothing of the crate at fault.
    for symbolizer in /usr/lib/llvm-*/bin/llvm-symbolizer; do
        export ASAN_SYMBOLIZER_PATH=$symbolizer
    done
    prepare &&
        run_step build cargo test --no-run --target="$TARGET" "${FEATURES[@]}" &&
        run_step test cargo test --no-fail-fast --target="$TARGET" "${FEATURES[@]}"
}

probe_miri() {
    rustc -V | grep -q nightly || { echo "needs a nightly toolchain"; return 1; }
    cargo miri --version >/dev/null 2>&1 ||
        { echo "cargo-miri is not in the toolchain (rustup component add miri rust-src)"; return 1; }
    cargo nextest --version >/dev/null 2>&1 ||
        { echo "cargo-nextest is not installed (cargo install cargo-nextest)"; return 1; }
}

tool_miri() {
    export RUSTFLAGS="$RUSTFLAGS -Zrandomize-layout -Cdebuginfo=1" RUSTDOCFLAGS="$RUSTFLAGS"
    export MIRIFLAGS="-Zmiri-disable-isolation -Zmiri-ignore-leaks -Zmiri-num-cpus=64"
    # One interpreter per test, each with its own time limit (nextest), as the seed.
    mkdir -p .config
    printf '[profile.default]\nslow-timeout = { period = "60s", terminate-after = 1 }\n' >.config/nextest.toml
    # Built once per container, as the seed does; clean_slate keeps it between crates.
    export MIRI_SYSROOT=$MIRI_SYSROOT_DIR
    [ -d "$MIRI_SYSROOT" ] || run_step prepare cargo miri setup || return 1
    prepare &&
        run_step build cargo miri test --no-run --target="$TARGET" "${FEATURES[@]}" &&
        MIRIFLAGS="$MIRIFLAGS --color=always" run_step test \
            cargo miri nextest run --no-fail-fast --target="$TARGET" "${FEATURES[@]}" &&
        run_step test cargo miri test --doc --no-fail-fast --target="$TARGET" "${FEATURES[@]}"
}

# Leaves nothing of the last job behind: its processes, /build, /tmp and cargo's caches.
clean_slate() {
    kill_the_rest
    wait 2>/dev/null
    find /build /tmp "$CARGO_HOME" -mindepth 1 \
        -not -path "$MIRI_SYSROOT_DIR" -not -path "$MIRI_SYSROOT_DIR/*" -delete 2>/dev/null
}

# Per-job scratch files of the loop (in /tmp, emptied between jobs).
job_files() {
    TICK_FIFO=$(mktemp -u /tmp/.crater-tick.XXXXXX) PEAK_FILE=/tmp/.crater-peak
    RESULT_FILE=/tmp/.crater-result OOMS_AT_START=$(oom_kills)
    mkfifo "$TICK_FIFO"
    echo 0 >"$PEAK_FILE"
}

# Unpacks the crate archive (ARCHIVE_BYTES bytes on stdin) into /build; 0 on success.
unpack_crate() {
    # Read exactly the archive's bytes, whatever happens after, so the stream stays in step.
    head -c "$ARCHIVE_BYTES" >/tmp/crate.tar.gz
    tar -xzf /tmp/crate.tar.gz -C /build 2>&1
    local code=$?
    rm -f /tmp/crate.tar.gz
    return $code
}

case "${1:-}" in
--fetch)
    # The networked half of an offline build: a short-lived container that shares /build and
    # cargo's home with the slot (which has no network), unpacks the crate from stdin and
    # downloads its dependencies. Its exit status says whether that worked.
    TIMEOUT=${2:-3600} ARCHIVE_BYTES=${3:?archive size}
    find /build /tmp "$CARGO_HOME" -mindepth 1 -delete 2>/dev/null
    job_files
    unpack_crate || exit 2
    dirs=(/build/*/)
    [ "${#dirs[@]}" = 1 ] || { echo "crater-worker: the archive must hold exactly one directory"; exit 2; }
    cd "${dirs[0]}" && fetch_dependencies
    exit $?
    ;;
--list-tools)
    declare -F | sed -n 's/^declare -f tool_//p'
    exit 0
    ;;
--probe)
    # One line a tool: "NAME ok" or "NAME missing REASON".
    for tool in $(declare -F | sed -n 's/^declare -f tool_//p'); do
        if ! declare -F "probe_$tool" >/dev/null; then
            echo "$tool ok"
        elif reason=$("probe_$tool"); then
            echo "$tool ok"
        else
            echo "$tool missing $reason"
        fi
    done
    exit 0
    ;;
esac

clean_slate
while IFS=' ' read -r verb NONCE TOOL TARGET TIMEOUT ARCHIVE_BYTES PREPARED; do
    if [ "$verb" != job ]; then
        echo "crater-worker: ignoring unknown request '$verb'"
        continue
    fi
    FAILED_STEP=- EXIT_CODE=0 TIMED_OUT=0 OOM=0 FEATURES=()
    if [ "${PREPARED:-0}" = 1 ]; then
        export CARGO_NET_OFFLINE=true
    else
        unset CARGO_NET_OFFLINE
        unpack_crate || FAILED_STEP=prepare EXIT_CODE=2
    fi
    job_files
    dirs=(/build/*/)
    if [ "$FAILED_STEP" = - ] && [ "${#dirs[@]}" != 1 ]; then
        echo "crater-worker: the archive must hold exactly one directory"
        FAILED_STEP=prepare EXIT_CODE=2
    fi
    if [ "$FAILED_STEP" = - ]; then
        if ! declare -F "tool_$TOOL" >/dev/null; then
            echo "crater-worker: this image has no tool '$TOOL'"
            FAILED_STEP=prepare EXIT_CODE=2
        else
            cd "${dirs[0]}" || exit 1
            printf '\033[1m[crater-at-home] %s with tool %s on %s, %s\033[0m\n' \
                "$(basename "$PWD")" "$TOOL" "$TARGET" "$(rustc -V 2>&1)"
            # A subshell, so what a tool exports or limits ends with the job.
            (
                export RUSTFLAGS="$BASE_RUSTFLAGS" RUSTDOCFLAGS="$BASE_RUSTFLAGS"
                "tool_$TOOL"
                echo "$FAILED_STEP $EXIT_CODE $TIMED_OUT $OOM" >"$RESULT_FILE"
            )
            if ! read -r FAILED_STEP EXIT_CODE TIMED_OUT OOM <"$RESULT_FILE"; then
                echo "crater-worker: the tool ended without a result"
                FAILED_STEP=build EXIT_CODE=137 OOM=$(( $(oom_kills) != OOMS_AT_START ))
            fi
            cd /
        fi
    fi
    PEAK=$(cat "$PEAK_FILE" 2>/dev/null || echo 0)
    clean_slate
    printf '\n@@crater-end %s %s %s %s %s %s\n' "$NONCE" "$FAILED_STEP" "$EXIT_CODE" "$TIMED_OUT" "$OOM" "$PEAK"
done
