#!/bin/bash
# crater-worker: the loop inside every slot container (its entrypoint, PID 1).
#
# It reads jobs from stdin and writes everything a job prints to stdout, one job at a time, for
# as long as the container lives. The agent on the other end never talks to a shell: only to this
# loop, over this protocol.
#
#   stdin:  job NONCE TOOL TARGET TIMEOUT_SECS ARCHIVE_BYTES\n  then ARCHIVE_BYTES bytes: a gzip'd
#           tar whose one top directory is the crate (a .crate file from crates.io is one).
#   stdout: the job's terminal output, then a line
#           @@crater-end NONCE STEP EXIT TIMED_OUT
#           STEP is the step that failed ("-" when all passed), EXIT its exit status, TIMED_OUT 0|1.
#
# NONCE is fresh for every job and lives only in this shell's memory: it is in no environment
# variable, argument or file a crate's code can read, so crate output cannot forge the end line.
#
# To add a tool: write a `tool_NAME` function below and add the name to `Tool` in
# proto/src/tool.rs. A step's name says which verdict its failure gets: "prepare" ->
# prepare-fail, "build" -> build-fail, "test" -> test-fail.
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

# run_step NAME COMMAND...: run COMMAND under a pseudo-terminal (128x64, so colours and cargo's
# progress survive) with the job's wall-clock limit. Records the first failure in FAILED_STEP.
run_step() {
    local name=$1
    shift
    printf '\033[1;36m$ %s\033[0m\n' "$*"
    local started=$SECONDS quoted
    quoted=$(printf '%q ' "$@")
    # `timeout` is the session leader inside the pty, so on expiry it signals the whole
    # foreground process group (cargo, rustc, test binaries), not just its child.
    script --quiet --flush --return --command \
        "stty cols 128 rows 64 2>/dev/null; exec nice -n 19 timeout --kill-after=10s ${TIMEOUT}s $quoted" \
        /dev/null </dev/null
    local code=$?
    if [ "$code" != 0 ]; then
        FAILED_STEP=$name
        EXIT_CODE=$code
        if { [ "$code" = 124 ] || [ "$code" = 137 ]; } && [ $((SECONDS - started)) -ge "$TIMEOUT" ]; then
            TIMED_OUT=1
        fi
        return 1
    fi
}

# Steps every tool starts with: resolve the newest compatible dependencies (as the seed does) and
# download them, so a crate that cannot be resolved is a prepare failure, not a build failure.
prepare() {
    run_step prepare cargo update --quiet && run_step prepare cargo fetch --quiet
}

tool_check() {
    prepare && run_step build cargo check --target="$TARGET"
}

tool_build() {
    # As the seed: the test binaries, optimised, with debug assertions.
    export RUSTFLAGS="$RUSTFLAGS -Copt-level=3 -Cdebug-assertions=yes"
    prepare && run_step build cargo test --no-run --target="$TARGET"
}

tool_test() {
    prepare &&
        run_step build cargo test --no-run --target="$TARGET" &&
        run_step test cargo test --no-fail-fast --target="$TARGET"
}

# Leaves nothing of the last job behind: its processes, /build, /tmp and cargo's caches.
clean_slate() {
    kill -KILL -1 2>/dev/null # every process but this one (PID 1)
    find /build /tmp "$CARGO_HOME" -mindepth 1 -delete 2>/dev/null
}

if [ "${1:-}" = "--list-tools" ]; then
    declare -F | sed -n 's/^declare -f tool_//p'
    exit 0
fi

while IFS=' ' read -r verb NONCE TOOL TARGET TIMEOUT ARCHIVE_BYTES; do
    if [ "$verb" != job ]; then
        echo "crater-worker: ignoring unknown request '$verb'"
        continue
    fi
    clean_slate
    FAILED_STEP=- EXIT_CODE=0 TIMED_OUT=0
    # Read exactly the archive's bytes, whatever happens after, so the stream stays in step.
    head -c "$ARCHIVE_BYTES" >/tmp/crate.tar.gz
    if ! tar -xzf /tmp/crate.tar.gz -C /build 2>&1; then
        FAILED_STEP=prepare EXIT_CODE=2
    fi
    rm -f /tmp/crate.tar.gz
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
            export RUSTFLAGS="$BASE_RUSTFLAGS" RUSTDOCFLAGS="$BASE_RUSTFLAGS"
            "tool_$TOOL"
            cd /
        fi
    fi
    printf '\n@@crater-end %s %s %s %s\n' "$NONCE" "$FAILED_STEP" "$EXIT_CODE" "$TIMED_OUT"
done
