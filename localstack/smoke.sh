#!/bin/bash
# Deploy build/router-lambda.zip to LocalStack's Lambda and invoke it with real API Gateway HTTP
# API (payload 2.0) events. Needs: Docker with `docker compose -f localstack/docker-compose.yml up -d`
# running, the AWS CLI, and the package (python scripts/build_lambda.py). Run from the repo root.
#
# NOT RUN on the development machines (they have no Docker engine); see README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=us-east-1
aws_local() { aws --endpoint-url "${LOCALSTACK_URL:-http://localhost:4566}" "$@"; }
fn=polysocket-router
zip=build/router-lambda.zip
[ -f "$zip" ] || python3 scripts/build_lambda.py --runs 0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

aws_local lambda delete-function --function-name "$fn" >/dev/null 2>&1 || true
aws_local lambda create-function --function-name "$fn" \
  --runtime python3.11 --architectures x86_64 --handler router_fn/handler.handler \
  --memory-size 512 --timeout 29 \
  --role arn:aws:iam::000000000000:role/polysocket-router \
  --environment 'Variables={POLYSOCKET_REDIS_URL=redis://valkey:6379/0}' \
  --zip-file "fileb://$zip" >/dev/null
aws_local lambda wait function-active-v2 --function-name "$fn"

invoke() { # invoke EVENT_NAME -> prints the Lambda's answer (the API Gateway response object)
  aws_local lambda invoke --function-name "$fn" --cli-binary-format raw-in-base64-out \
    --payload "file://localstack/events/$1-httpapi-v2.json" "$work/$1.json" >/dev/null
  cat "$work/$1.json"
}

fail=0
out=$(invoke healthz)
if python3 -c 'import json,sys; r=json.loads(sys.argv[1]); assert r["statusCode"]==200 and json.loads(r["body"])["ok"]' "$out"
then echo "ok   GET /healthz: $out"; else echo "FAIL GET /healthz: $out"; fail=1; fi

# No token in the event: the router must answer with a JSONP error (status 200, callback called).
out=$(invoke connect)
if python3 -c 'import json,sys; r=json.loads(sys.argv[1]); assert r["statusCode"]==200 and r["body"].startswith("/**/ps.cb0(") and r["headers"]["content-type"].startswith("application/javascript")' "$out"
then echo "ok   GET /connect (JSONP): $out"; else echo "FAIL GET /connect: $out"; fail=1; fi

exit $fail
