#!/usr/bin/env bash
# `make demo`: the whole loop on one machine, end to end.
#   1. train the tutorial MLP on MNIST (cosine learning-rate decay, a fixed seed, refusing to
#      publish below MIN_ACCURACY or below the stable version) and publish the next version into
#      models/mnist; a refused model (trainer exit 3) is said so, and the demo goes on with the
#      versions already published;
#   2. start a server: stock TF Serving (docker compose) when a Docker engine answers, else the
#      local server in the background (pid in runs/demo/server.pid, log in runs/demo/server.log),
#      both on the repository's rollout state, models/models.config;
#   3. wait until the model is AVAILABLE, meanwhile write the MNIST test set as PNG folders;
#   4. a new version that is not the first: `rollout canary N`, then `rollout promote` on the
#      test set, which makes it stable only if it passes the gate;
#   5. score the folder into a CSV and evaluate it into a report with the stable version, print
#      the report's accuracy;
#   6. stop the server, also when a step fails or the run is interrupted.
# Knobs (environment): MNIST_DIR (the IDX files; empty: Keras' download), EPOCHS (20),
# MODEL_REPO (models), GRPC_PORT (8500), REST_PORT (8501), MIN_ACCURACY (0.98).
set -euo pipefail
cd "$(dirname "$0")/.."

python=${VENV:-.venv}/bin/python
epochs=${EPOCHS:-20}
model_repo=${MODEL_REPO:-models}
grpc_port=${GRPC_PORT:-8500}
rest_port=${REST_PORT:-8501}
min_accuracy=${MIN_ACCURACY:-0.98}
run_dir=runs/demo
images=data/mnist-test
# Written once the export finished, outside the folder so that scoring never sees it.
images_done=data/.mnist-test.complete
preds=$run_dir/preds.csv
report_dir=reports/demo
data_flags=()
[[ -n ${MNIST_DIR:-} ]] && data_flags=(--data-dir "$MNIST_DIR")

step() { printf '\n==> %s\n' "$*"; }
started=$SECONDS
server_kind=""
export_pid=""

cleanup() {
    local status=$?
    [[ -n $export_pid ]] && kill "$export_pid" 2>/dev/null || true
    case $server_kind in
        compose)
            step "stopping TF Serving (docker compose down)"
            docker compose -f serving/compose.yaml down || true
            ;;
        local)
            step "stopping the local server"
            scripts/serve_local.sh stop --pid-file "$run_dir/server.pid" || true
            ;;
    esac
    if ((status != 0)); then
        echo "demo: failed (exit $status) after $((SECONDS - started)) s" >&2
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Which server, and are its ports free? Decided before training, so that a busy port costs
# seconds, not a training run and a published version.
if timeout 20 docker info >/dev/null 2>&1; then
    use_compose=1
    if [[ $grpc_port != 8500 || $rest_port != 8501 ]]; then
        echo "demo: the compose setup publishes 8500/8501; GRPC_PORT/REST_PORT are ignored" >&2
        grpc_port=8500 rest_port=8501
    fi
else
    use_compose=""
fi
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in "$grpc_port" "$rest_port"; do
    if port_busy "$port"; then
        echo "demo: port $port is taken (a server from an earlier run? 'make stop'); free it or" \
            "pick others: make demo GRPC_PORT=9500 REST_PORT=9501" >&2
        exit 1
    fi
done

mkdir -p "$run_dir"

step "training the MLP on MNIST ($epochs epochs at most) and publishing into $model_repo/mnist"
trained=0
"$python" -m trainer train --dataset mnist "${data_flags[@]}" --model mlp --epochs "$epochs" \
    --seed 42 --schedule cosine --model-repo "$model_repo" --model-name mnist --run-dir "$run_dir/train" \
    --min-accuracy "$min_accuracy" || trained=$?
# Exit 3: the trainer refused to publish (its last line says why) and published nothing.
published=""
if ((trained == 3)); then
    if ! compgen -G "$model_repo/mnist/[0-9]*" >/dev/null; then
        echo "demo: publishing refused (above) and $model_repo/mnist has no version to serve" >&2
        exit 1
    fi
    echo "demo: publishing refused (above): nothing new was published; the demo goes on with" \
        "the versions already in $model_repo/mnist, stable stays where it is"
elif ((trained != 0)); then
    exit "$trained"
else
    published=$("$python" -c 'import json, sys; print(json.load(open(sys.argv[1]))["version"])' \
        "$run_dir/train/metrics.json")
fi

# The image folder does not depend on the model: write it while the server loads. A complete
# folder from an earlier run is reused.
if [[ ! -f $images_done ]]; then
    step "writing the MNIST test set as PNG folders into $images (in the background)"
    rm -rf "$images" "$images_done"
    # The exporter itself in the background (no subshell around it), so that cleanup's kill
    # reaches it; the completion marker is written after `wait` below.
    "$python" -m trainer export-images --dataset mnist --split test --out "$images" \
        "${data_flags[@]}" >"$run_dir/export-images.log" 2>&1 &
    export_pid=$!
fi

if [[ -n $use_compose ]]; then
    step "starting stock TF Serving (docker compose, gRPC :8500, REST :8501)"
    server_kind=compose
    if [[ ! -f $model_repo/models.config ]]; then
        "$python" -m client rollout init --model-repo "$model_repo" --model mnist
    fi
    MODEL_REPOSITORY="$(cd "$model_repo" && pwd)" docker compose -f serving/compose.yaml up -d
else
    step "no Docker engine: starting the local server (python -m serving) in the background"
    server_kind=local
    scripts/serve_local.sh start --pid-file "$run_dir/server.pid" --log-file "$run_dir/server.log" \
        --grpc-port "$grpc_port" --rest-port "$rest_port" --model-name mnist \
        --model-repo "$(cd "$model_repo" && pwd)"
fi

step "waiting until mnist is AVAILABLE"
"$python" -m client wait --timeout 180 --server "http://localhost:$rest_port"

if [[ -n $export_pid ]]; then
    step "waiting for the image export"
    if ! wait "$export_pid"; then
        export_pid=""
        cat "$run_dir/export-images.log" >&2
        exit 1
    fi
    export_pid=""
    touch "$images_done"
fi

# A new version other than the first waits on disk until a rollout step pins it: canary first,
# then promote, which makes it stable only if it is not worse on the test set (exit 3: it stays
# canary, stable keeps serving).
stable=$("$python" -c 'import sys
from common import rollout_state
print(rollout_state.read(sys.argv[1]).model("mnist").labels["stable"])' "$model_repo")
if [[ -n $published && $published != "$stable" ]]; then
    step "canary: version $published beside stable version $stable"
    "$python" -m client rollout canary "$published" --model-repo "$model_repo" \
        --server "grpc://localhost:$grpc_port"
    step "promote: canary $published against stable $stable on $images"
    promoted=0
    "$python" -m client rollout promote "$images" --model-repo "$model_repo" \
        --report-dir "$run_dir/promote" --server "grpc://localhost:$grpc_port" || promoted=$?
    if ((promoted == 3)); then
        echo "demo: the gate kept version $stable stable (above; $run_dir/promote/report.md)"
    elif ((promoted != 0)); then
        exit "$promoted"
    fi
fi

step "scoring $images over gRPC into $preds (label stable)"
"$python" -m client score "$images" --out "$preds" --overwrite --label stable \
    --server "grpc://localhost:$grpc_port"

step "evaluating $images into $report_dir (label stable)"
"$python" -m client evaluate "$images" --report-dir "$report_dir" --label stable \
    --server "grpc://localhost:$grpc_port"

accuracy=$("$python" -c 'import json, sys; print(json.load(open(sys.argv[1]))["accuracy"])' \
    "$report_dir/report.json")
step "done in $((SECONDS - started)) s"
echo "predictions: $preds"
echo "report:      $report_dir/report.html (also report.md, report.json, confusion_matrix.png)"
echo "accuracy:    $accuracy on $(wc -l <"$preds" | awk '{print $1 - 1}') test images"
"$python" -c 'import sys; sys.exit(float(sys.argv[1]) < float(sys.argv[2]))' \
    "$accuracy" "$min_accuracy" || { echo "demo: accuracy $accuracy is below $min_accuracy" >&2; exit 1; }
