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
#           @@crater-end NONCE STEP EXIT TIMED_OUT OOM PEAK_BYTES NO_SPACE
#           STEP is the step that failed ("-" when all passed), EXIT its exit status, TIMED_OUT,
#           OOM and NO_SPACE 0|1, PEAK_BYTES the peak memory of the container during the job.
#
# The judge is not the judged. This loop runs as root inside the container; everything that
# touches the crate (unpacking it, reading its metadata, cargo, build scripts, tests) runs as the
# unprivileged user `crater` (uid 1000) through setpriv, which leaves it no capabilities. So crate
# code:
#   - cannot read or write the loop's bookkeeping (step results, peak memory, the disk flag): it
#     lives in /run/crater, a tmpfs owned by root with mode 0700;
#   - cannot learn the nonce: it lives only in this shell's memory, in no environment variable,
#     argument or file, and the loop's /proc/1/{mem,environ,fd} belong to another user (reading
#     them or ptrace needs CAP_SYS_PTRACE, which nobody here has);
#   - cannot signal the loop or its helpers (another user, and it has no CAP_KILL);
#   - cannot write the Miri sysroot (built by root into a root-owned tmpfs) or the nextest
#     profile (in the image);
#   - owns everything it makes under /build, /cargo, /tmp, /dev/shm and /dev/mqueue, and nothing
#     else there: those folders are root's, sticky and world-writable, so it cannot chmod, rename
#     or remove them. After every job the crate user itself makes what it made writable again
#     and deletes it, so no mode, sticky bit, FIFO, socket or hard link survives into the next
#     crate, and neither does a cargo config planted behind a read-only folder.
#
# Capabilities: the container has `--cap-drop ALL`, `no-new-privileges`, and exactly these:
#   SETUID, SETGID  setpriv switching to the crate user and dropping supplementary groups;
#   KILL            `kill -KILL -1` after every step: from PID 1, without forking (a fork bomb may
#                   hold every pid), reaching the crate user's processes.
# Not needed, so not given: DAC_OVERRIDE and FOWNER (the crate user empties its own files), CHOWN,
# NET_RAW, SYS_PTRACE and the rest of Docker's default set.
#
# Everything in the container but this loop belongs to the current job, so after every step the
# loop kills every other process (`kill -KILL -1` spares only PID 1): a job's daemons, fork bombs
# and stragglers never reach the next job.
#
# Disk: /build and /cargo are the slot's own filesystem when the agent gives it one (--disk-gb);
# a job that keeps it full for FULL_GRACE_SECS is stopped, and NO_SPACE=1 says why it failed.
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
# Root's alone (a tmpfs, 0700): the loop's bookkeeping, and the cargo home Miri's setup uses.
STATE=/run/crater
# Root-owned, readable by all: Miri's sysroot, built once per container and kept between crates.
MIRI_SYSROOT_DIR=/opt/miri-sysroot
# The nextest profile for Miri, in the image (root's): the crate cannot loosen its time limits.
NEXTEST_CONFIG=/usr/local/share/crater/nextest.toml
# Where a job may write; emptied after every job.
SCRATCH=(/build "$CARGO_HOME" /tmp /dev/shm /dev/mqueue)
# A job whose disk has less than this free for FULL_GRACE_SECS in a row is stopped.
FULL_BYTES=$((16 << 20)) FULL_INODES=64 FULL_GRACE_SECS=5
# Runs a command as the crate user: uid and gid 1000, no supplementary groups, no capabilities
# (setuid from root clears them; no-new-privileges keeps them from coming back).
AS_CRATE=(setpriv --reuid=1000 --regid=1000 --clear-groups --inh-caps=-all --)
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

# True when /build, cargo's home or /tmp has (almost) no space or no inodes left.
disk_full() {
    local avail block inodes
    while read -r avail block inodes; do
        ((avail * block < FULL_BYTES || inodes < FULL_INODES)) && return 0
    done < <(stat -f -c '%a %S %d' /build "$CARGO_HOME" /tmp 2>/dev/null)
    return 1
}

# Samples the memory usage four times a second into PEAK_FILE, without forking per sample (a
# fork bomb must not turn the sampler into a busy loop). Once a second it looks at the disk: a
# job that keeps it full is stopped (it would otherwise spin on ENOSPC until its time limit).
start_sampler() {
    (
        exec {tick}<>"$TICK_FIFO"
        peak=$(cat "$PEAK_FILE" 2>/dev/null || echo 0)
        ticks=0 full=0
        while :; do
            read -r usage <"$MEMORY_USAGE" || usage=0
            if ((usage > peak)); then
                peak=$usage
                echo "$peak" >"$PEAK_FILE"
            fi
            if ((++ticks % 4 == 0)); then
                if ! disk_full; then
                    full=0
                elif ((++full >= FULL_GRACE_SECS)); then
                    echo 1 >"$NO_SPACE_FILE"
                    printf '\n\033[1;31m[crater-at-home] the job filled its disk and kept it full for %s s: stopped\033[0m\n' "$FULL_GRACE_SECS"
                    # Every process of the crate user: the step and all it started. (Not
                    # `kill -1` from here: that would take the tool's own shell with it.)
                    "${AS_CRATE[@]}" kill -KILL -1 2>/dev/null
                    exit 0
                fi
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

# run_step NAME COMMAND...: run COMMAND as the crate user in the crate's folder, under a
# pseudo-terminal (128x64, so colours and cargo's progress survive), with the job's wall-clock
# limit. Records the first failure in FAILED_STEP. STEP_AS=root runs a trusted command (Miri's
# sysroot) as root instead, in STEP_DIR.
run_step() {
    local name=$1
    shift
    printf '\033[1;36m$ %s\033[0m\n' "$*"
    local started=$SECONDS quoted ooms_before drop=
    quoted=$(printf '%q ' "$@")
    [ "${STEP_AS:-crate}" = root ] || drop=$(printf '%q ' "${AS_CRATE[@]}")
    ooms_before=$(oom_kills)
    start_sampler
    # `script` stays root and holds the pty; the command runs as the crate user, with `timeout`
    # as the session leader inside the pty, so on expiry it signals the whole foreground process
    # group (cargo, rustc, test binaries), not just its child. The job's processes volunteer to
    # be the OOM killer's first choice, before this loop.
    script --quiet --flush --return --command \
        "echo 1000 >/proc/self/oom_score_adj; stty cols 128 rows 64 2>/dev/null; exec $drop env -C $(printf %q "${STEP_DIR:-$CRATE_DIR}") nice -n 19 timeout --kill-after=10s ${TIMEOUT}s $quoted" \
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
    "${AS_CRATE[@]}" env -C "$CRATE_DIR" cargo metadata --no-deps --format-version 1 2>/dev/null </dev/null |
        jq -r --arg manifest "$CRATE_DIR/Cargo.toml" '
        .packages[] | select(.manifest_path == $manifest) | (.metadata // {}) |
        [.playground, .["docs.rs"], .docs.rs] | map(select(type == "object")) as $m |
        ([$m[] | .features // [] | .[]] | unique) as $features |
        (if ($features | length) > 0 then "--features=" + ($features | join(",")) else empty end),
        (if any($m[]; .["all-features"] == true) then "--all-features" else empty end),
        (if any($m[]; .["no-default-features"] == true) then "--no-default-features" else empty end)'
}

# Resolves the newest compatible dependencies (as the seed does) and downloads them, so a crate
# that cannot be resolved is a prepare failure, not a build failure. No crate code runs here:
# the environment overrides any rustc or wrapper a cargo config in the crate names (in an
# offline build this is the only step with a network).
fetch_dependencies() {
    local rustc
    rustc=$(command -v rustc)
    RUSTC=$rustc RUSTC_WRAPPER= RUSTC_WORKSPACE_WRAPPER= run_step prepare cargo update --quiet &&
        RUSTC=$rustc RUSTC_WRAPPER= RUSTC_WORKSPACE_WRAPPER= run_step prepare cargo fetch --quiet
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

# Builds Miri's sysroot once per container, as the seed does. It runs as root, from /, with a
# cargo home of root's own, before any of the crate's code: no crate can plant anything in it,
# and the crate user can read it but not change it. (Offline builds have no network here to
# fetch the standard library's dependencies: use --network on with Miri.)
miri_sysroot() {
    [ -f "$MIRI_SYSROOT_DIR/.crater-ready" ] && return 0
    mkdir -p "$STATE/miri-cargo" "$STATE/miri-tmp"
    CARGO_HOME=$STATE/miri-cargo TMPDIR=$STATE/miri-tmp HOME=$STATE STEP_AS=root STEP_DIR=/ \
        run_step prepare cargo miri setup || return 1
    : >"$MIRI_SYSROOT_DIR/.crater-ready"
}

tool_miri() {
    export RUSTFLAGS="$RUSTFLAGS -Zrandomize-layout -Cdebuginfo=1" RUSTDOCFLAGS="$RUSTFLAGS"
    export MIRIFLAGS="-Zmiri-disable-isolation -Zmiri-ignore-leaks -Zmiri-num-cpus=64"
    export MIRI_SYSROOT=$MIRI_SYSROOT_DIR
    # One interpreter per test, each with its own time limit (nextest, the image's profile).
    miri_sysroot && prepare &&
        run_step build cargo miri test --no-run --target="$TARGET" "${FEATURES[@]}" &&
        MIRIFLAGS="$MIRIFLAGS --color=always" run_step test \
            cargo miri nextest run --config-file "$NEXTEST_CONFIG" --no-fail-fast \
            --target="$TARGET" "${FEATURES[@]}" &&
        run_step test cargo miri test --doc --no-fail-fast --target="$TARGET" "${FEATURES[@]}"
}

# Leaves nothing of the last job behind: its processes, then everything it wrote. The crate user
# owns all of that and nothing else there, so it deletes it itself, first making every folder it
# made writable and searchable again (whatever modes it set). It also drops the System V IPC
# objects it made, which would outlive it in the container's IPC namespace.
clean_slate() {
    kill_the_rest
    wait 2>/dev/null
    "${AS_CRATE[@]}" /bin/sh -c '
        find "$@" -mindepth 1 -maxdepth 1 -exec chmod -R u+rwx {} + 2>/dev/null
        find "$@" -mindepth 1 -maxdepth 1 -exec rm -rf {} + 2>/dev/null
        ipcrm --all 2>/dev/null
        true' clean "${SCRATCH[@]}" </dev/null
    kill_the_rest # in case the crate left something that started again
    local left
    left=$(find "${SCRATCH[@]}" -mindepth 1 -maxdepth 1 -print -quit 2>/dev/null)
    if [ -n "$left" ]; then
        echo "crater-worker: cannot empty the scratch folders ($left is left); this container ends"
        return 1
    fi
}

# Per-job scratch files of the loop, in root's own folder.
job_files() {
    find "$STATE" -mindepth 1 -maxdepth 1 -name 'job.*' -exec rm -rf {} +
    local dir
    dir=$(mktemp -d "$STATE/job.XXXXXX")
    TICK_FIFO=$dir/tick PEAK_FILE=$dir/peak RESULT_FILE=$dir/result NO_SPACE_FILE=$dir/no-space
    OOMS_AT_START=$(oom_kills)
    mkfifo "$TICK_FIFO"
    echo 0 >"$PEAK_FILE"
}

# Unpacks the crate archive (ARCHIVE_BYTES bytes on stdin) into /build as the crate user; 0 on
# success. Exactly the archive's bytes are read, whatever tar does, so the stream stays in step.
unpack_crate() {
    head -c "$ARCHIVE_BYTES" | {
        "${AS_CRATE[@]}" tar -xz -C /build 2>&1
        status=$?
        cat >/dev/null
        exit $status
    }
}

# The crate's folder: the one folder the archive unpacked into /build.
find_crate_dir() {
    local dirs=(/build/*/)
    if [ "${#dirs[@]}" != 1 ]; then
        echo "crater-worker: the archive must hold exactly one directory"
        return 1
    fi
    CRATE_DIR=${dirs[0]%/}
}

case "${1:-}" in
--fetch)
    # The networked half of an offline build: a short-lived container that shares /build and
    # cargo's home with the slot (which has no network), unpacks the crate from stdin and
    # downloads its dependencies. Its exit status says whether that worked.
    TIMEOUT=${2:-3600} ARCHIVE_BYTES=${3:?archive size}
    clean_slate || exit 2
    job_files
    unpack_crate || exit 2
    find_crate_dir || exit 2
    fetch_dependencies
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

cd / || exit 1
clean_slate || exit 1
while IFS=' ' read -r verb NONCE TOOL TARGET TIMEOUT ARCHIVE_BYTES PREPARED; do
    if [ "$verb" != job ]; then
        echo "crater-worker: ignoring unknown request '$verb'"
        continue
    fi
    FAILED_STEP=- EXIT_CODE=0 TIMED_OUT=0 OOM=0 FEATURES=() CRATE_DIR=
    job_files
    if [ "${PREPARED:-0}" = 1 ]; then
        export CARGO_NET_OFFLINE=true
    else
        unset CARGO_NET_OFFLINE
        unpack_crate || FAILED_STEP=prepare EXIT_CODE=2
    fi
    if [ "$FAILED_STEP" = - ] && ! find_crate_dir; then
        FAILED_STEP=prepare EXIT_CODE=2
    fi
    if [ "$FAILED_STEP" = - ]; then
        if ! declare -F "tool_$TOOL" >/dev/null; then
            echo "crater-worker: this image has no tool '$TOOL'"
            FAILED_STEP=prepare EXIT_CODE=2
        else
            printf '\033[1m[crater-at-home] %s with tool %s on %s, %s\033[0m\n' \
                "$(basename "$CRATE_DIR")" "$TOOL" "$TARGET" "$(rustc -V 2>&1)"
            # A subshell, so what a tool exports or limits ends with the job.
            (
                export RUSTFLAGS="$BASE_RUSTFLAGS" RUSTDOCFLAGS="$BASE_RUSTFLAGS"
                "tool_$TOOL"
                echo "$FAILED_STEP $EXIT_CODE $TIMED_OUT $OOM" >"$RESULT_FILE"
            )
            if ! read -r FAILED_STEP EXIT_CODE TIMED_OUT OOM <"$RESULT_FILE"; then
                echo "crater-worker: the tool ended without a result"
                FAILED_STEP=build EXIT_CODE=137 OOM=$(($(oom_kills) != OOMS_AT_START))
            fi
        fi
    fi
    PEAK=$(cat "$PEAK_FILE" 2>/dev/null || echo 0)
    NO_SPACE=0
    if [ -s "$NO_SPACE_FILE" ] || disk_full; then
        NO_SPACE=1
    fi
    clean_slate
    cleaned=$?
    printf '\n@@crater-end %s %s %s %s %s %s %s\n' "$NONCE" "$FAILED_STEP" "$EXIT_CODE" "$TIMED_OUT" "$OOM" "$PEAK" "$NO_SPACE"
    [ "$cleaned" = 0 ] || exit 1
done
