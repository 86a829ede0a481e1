#!/usr/bin/env bash
# The two quick-start commands. Each creates .venv at the repository root on first use (pip only:
# torch comes from the machine's local wheels where it has them) and then runs:
#   ./run.sh demo   train the default built-in pair, write TensorBoard logs, checkpoints and a
#                   results gallery, and print the evaluation score
#   ./run.sh test   the test suite
set -euo pipefail
cd "$(dirname "$0")"

python=${PYTHON:-python3}
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || {
    echo "error: Python 3.10 or newer is needed ($python is $("$python" --version 2>&1))" >&2; exit 1; }

# (Re)install when pyproject.toml changes; the stamp names the extras installed.
install() {
    local extras=$1 stamp
    stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-12)-${extras:-base}"
    [ -f "$stamp" ] && return
    [ -x .venv/bin/python ] || "$python" -m venv .venv
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --progress-bar off -e ".${extras:+[$extras]}"
    touch "$stamp"
}

case "${1:-}" in
    demo)
        install ""
        shift
        .venv/bin/cyclegan train --config experiments/quickstart.yaml "$@"
        .venv/bin/cyclegan test --config experiments/quickstart.yaml --num_test 20 "$@"
        .venv/bin/cyclegan eval --config experiments/quickstart.yaml "$@"
        echo "TensorBoard: .venv/bin/tensorboard --logdir checkpoints/quickstart/tensorboard"
        echo "Gallery:     results/quickstart/test_latest/index.html"
        ;;
    test)
        install "test"
        shift
        exec .venv/bin/python -m pytest "$@"
        ;;
    *)
        echo "usage: ./run.sh demo|test [extra arguments]" >&2
        exit 2
        ;;
esac
