#!/usr/bin/env bash
# Offline validation of the SAM deployment: cfn-lint with the cfn-lint-serverless rules, then
# the pytest suite that translates template.yaml with aws-sam-translator and checks the stacks
# it would create. Needs the tools in .venv (`make venv`); no AWS account or network.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv/bin

for tool in cfn-lint pytest; do
    if [ ! -x "$venv/$tool" ]; then
        echo "missing $venv/$tool: run 'make venv' (requirements-dev.txt)" >&2
        exit 1
    fi
done

echo "== cfn-lint (with serverless rules, informational checks included)"
"$venv/cfn-lint" template.yaml --append-rules cfn_lint_serverless.rules --include-checks I
echo "cfn-lint: no findings"

echo "== template tests"
PYTHONDONTWRITEBYTECODE=1 "$venv/pytest" -q -p no:cacheprovider tests/template/test_template.py "$@"
