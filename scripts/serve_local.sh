#!/usr/bin/env bash
# Start or stop the local server (python -m serving) in the background.
#
#   scripts/serve_local.sh start --pid-file runs/server.pid --log-file runs/server.log \
#       --grpc-port 8500 --rest-port 8501 --model-repo "$PWD/models" --model-name mnist \
#       [--config-poll-seconds 5] [--timeout 180]
#   scripts/serve_local.sh stop --pid-file runs/server.pid
#
# `start` serves the repository the way serving/compose.yaml has stock TF Serving serve it: its
# rollout state <repo>/models.config (--model_config_file, re-read every --config-poll-seconds),
# which the trainer's first publish writes; a repository published before that gets one from
# `python -m client rollout init` (stable and canary on the newest version). It returns once the
# model is AVAILABLE (or fails with the log's tail); `stop` sends SIGTERM (the server finishes
# in-flight requests), then SIGKILL after 30 s.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${VENV:-.venv}/bin/python
command=${1:-}
shift || true
pid_file=runs/server.pid log_file=runs/server.log grpc_port=8500 rest_port=8501
model_name=mnist model_repo="$PWD/models" config_poll_seconds=5 timeout=180
while (($#)); do
    case $1 in
        --pid-file) pid_file=$2 ;;
        --log-file) log_file=$2 ;;
        --grpc-port) grpc_port=$2 ;;
        --rest-port) rest_port=$2 ;;
        --model-name) model_name=$2 ;;
        --model-repo) model_repo=$2 ;;
        --config-poll-seconds) config_poll_seconds=$2 ;;
        --timeout) timeout=$2 ;;
        *) echo "serve_local.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift 2
done

fail() { echo "serve_local.sh: $*" >&2; exit 1; }

# The pid in the file, if that process is still our server (pids get reused).
running_pid() {
    [[ -f $pid_file ]] || return 1
    local pid
    pid=$(<"$pid_file")
    [[ $pid =~ ^[0-9]+$ ]] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "-m serving" \
        && echo "$pid"
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start() {
    local pid
    if pid=$(running_pid); then fail "already running (pid $pid, $pid_file); 'make stop' first"; fi
    [[ -d $model_repo/$model_name ]] || fail "no model repository at $model_repo/$model_name; 'make train' publishes one"
    for port in "$grpc_port" "$rest_port"; do
        if port_busy "$port"; then
            fail "port $port is taken; stop what uses it or pick others (GRPC_PORT=..., REST_PORT=...)"
        fi
    done
    if [[ ! -f $model_repo/models.config ]]; then
        "$python" -m client rollout init --model-repo "$model_repo" --model "$model_name" \
            || fail "cannot start the rollout state $model_repo/models.config (above)"
    fi
    mkdir -p "$(dirname "$pid_file")" "$(dirname "$log_file")"
    # setsid: the server gets its own session, so an interrupted make does not take it down
    # half-way; only `stop` ends it.
    setsid "$python" -m serving --port="$grpc_port" --rest_api_port="$rest_port" \
        --model_config_file="$model_repo/models.config" \
        --model_config_file_poll_wait_seconds="$config_poll_seconds" \
        --allow_version_labels_for_unavailable_models=true \
        >"$log_file" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$pid_file"
    echo "local server: pid $pid, gRPC :$grpc_port, REST :$rest_port, log $log_file"
    local deadline=$((SECONDS + timeout))
    until "$python" -m client wait --timeout 5 --model "$model_name" \
        --server "http://localhost:$rest_port" >/dev/null 2>&1; do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$pid_file"
            tail -n 20 "$log_file" >&2
            fail "the server exited during start-up (log above, full log in $log_file)"
        fi
        if ((SECONDS >= deadline)); then
            tail -n 20 "$log_file" >&2
            fail "$model_name not AVAILABLE after ${timeout}s (server still running: 'make stop')"
        fi
        sleep 1
    done
    echo "local server: $model_name is AVAILABLE"
}

stop() {
    local pid
    if ! pid=$(running_pid); then
        rm -f "$pid_file"
        echo "local server: not running"
        return 0
    fi
    kill -TERM "$pid"
    for _ in $(seq 60); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "local server: pid $pid ignored SIGTERM for 30 s, killing it" >&2
        kill -KILL "$pid"
    fi
    rm -f "$pid_file"
    echo "local server: stopped (pid $pid)"
}

case $command in
    start) start ;;
    stop) stop ;;
    *) echo "usage: serve_local.sh start|stop [options] (see the header of this script)" >&2; exit 2 ;;
esac
