#!/usr/bin/env bash
# The two quick-start commands. Each creates .venv at the repository root on first use (pip only:
# torch comes from the machine's local wheels where it has them) and then runs:
#   ./run.sh demo   train the default built-in pair, write TensorBoard logs, checkpoints and a
#                   results gallery, and print the evaluation score
#   ./run.sh test   the test suite (./run.sh test -m "not slow": the quick tier)
#   ./run.sh lock   regenerate requirements/lock-linux-x86_64-py311.txt
set -euo pipefail
cd "$(dirname "$0")"

python=${PYTHON:-python3}
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || {
    echo "error: Python 3.10 or newer is needed ($python is $("$python" --version 2>&1))" >&2; exit 1; }

LOCK=requirements/lock-linux-x86_64-py311.txt

# The lock holds for Linux x86_64 with Python 3.11; elsewhere pyproject.toml's ranges apply.
lock_applies() {
    [ "$(uname -s)-$(uname -m)" = Linux-x86_64 ] && "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'
}

pinned() { grep "^$1==" "$LOCK" | head -n1; }

# (Re)install when pyproject.toml or the lock changes; the stamp names the extras installed.
# With the lock every package has exactly one allowed version, so pip never backtracks, and the
# project is built with the locked setuptools (no isolated build environment to resolve).
install() {
    local extras=$1 stamp
    stamp=".venv/.installed-$(cat pyproject.toml "$LOCK" | sha256sum | cut -c1-12)-${extras:-base}"
    [ -f "$stamp" ] && return
    [ -x .venv/bin/python ] || "$python" -m venv .venv
    if lock_applies; then
        .venv/bin/python -m pip install --quiet "$(pinned pip)" "$(pinned setuptools)"
        .venv/bin/python -m pip install --progress-bar off --no-build-isolation -c "$LOCK" -e ".${extras:+[$extras]}"
    else
        echo "notice: $LOCK is for Linux x86_64 with Python 3.11; installing from pyproject.toml's ranges" \
             "(versions the test suite was not run with)" >&2
        .venv/bin/python -m pip install --quiet --upgrade pip
        .venv/bin/python -m pip install --progress-bar off -e ".${extras:+[$extras]}"
    fi
    touch "$stamp"
}

# Resolve requirements/lock.in with the project and all its extras in a scratch environment and
# freeze the result as the new lock.
relock() {
    local scratch
    scratch=$(mktemp -d)
    trap 'rm -rf "$scratch"' RETURN
    "$python" -m venv "$scratch/venv"
    "$scratch/venv/bin/python" -m pip install --quiet --upgrade pip
    "$scratch/venv/bin/python" -m pip install --progress-bar off -r requirements/lock.in -e ".[test]"
    {
        echo "# Every package of 'pip install -e .[test]' (which takes in the export extra) on Linux x86_64, Python 3.11, as used by run.sh and CI"
        echo "# (a pip constraints file). Regenerate with ./run.sh lock (choices in requirements/lock.in)."
        "$scratch/venv/bin/python" -m pip freeze --all --exclude-editable
    } > "$LOCK"
    echo "wrote $LOCK ($(grep -c '==' "$LOCK") packages)"
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
    lock)
        lock_applies || { echo "error: the lock is made on Linux x86_64 with Python 3.11" >&2; exit 1; }
        relock
        ;;
    *)
        echo "usage: ./run.sh demo|test [extra arguments] | ./run.sh lock" >&2
        exit 2
        ;;
esac
