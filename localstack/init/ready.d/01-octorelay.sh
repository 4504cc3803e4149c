#!/bin/bash
# LocalStack READY hook: creates the AWS resources the compose stack's octorelay config
# (localstack/octorelay.json) names. Mounted into /etc/localstack/init/ready.d/ by
# localstack/docker-compose.yml; LocalStack runs it once it serves requests.
#
# Idempotent: safe to re-run by hand against a running LocalStack, e.g.
#   docker compose -f localstack/docker-compose.yml exec localstack \
#     /etc/localstack/init/ready.d/01-octorelay.sh
#
# Resources (keep QUEUES and BUCKET in sync with localstack/octorelay.json, the config the
# compose stack runs with; test/integration/docs.test.ts checks they agree):
#   SQS  orders-dlq, clicks-dlq, events-dlq        (dead-letter queues)
#   SQS  orders -> orders-dlq, clicks -> clicks-dlq, events -> events-dlq
#        (RedrivePolicy maxReceiveCount 5, VisibilityTimeout 60 s)
#   S3   octorelay-deliveries
set -euo pipefail

# LocalStack >= 4 no longer injects credentials into init hooks; set them
# explicitly. Access key "test" maps to LocalStack's default account
# 000000000000, the same account octorelay uses with AWS_ACCESS_KEY_ID=test.
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}"
export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-${AWS_REGION:-us-east-1}}"
export AWS_PAGER=""

# "queue:dead-letter-queue" pairs.
readonly QUEUES=(
  "orders:orders-dlq"
  "clicks:clicks-dlq"
  "events:events-dlq"
)
readonly BUCKET="octorelay-deliveries"
readonly MAX_RECEIVE_COUNT=5
readonly VISIBILITY_TIMEOUT=60
# Keep dead letters for the SQS maximum (14 days) so they outlive the source
# queue's retention (SQS keeps the original enqueue time on redrive).
readonly DLQ_RETENTION_SECONDS=1209600

log() { printf '[octorelay-init] %s\n' "$*"; }

# create-queue without attributes returns the existing queue's URL when the
# queue already exists; attributes are then (re)applied with
# set-queue-attributes, so re-runs converge instead of failing with
# QueueAlreadyExists.
ensure_queue() {
  awslocal sqs create-queue --queue-name "$1" --query QueueUrl --output text
}

queue_arn() {
  awslocal sqs get-queue-attributes --queue-url "$1" \
    --attribute-names QueueArn --query Attributes.QueueArn --output text
}

# $1 queue name, $2 dead-letter queue name
ensure_queue_with_dlq() {
  local name=$1 dlq_name=$2 dlq_url dlq_arn url attributes

  dlq_url=$(ensure_queue "${dlq_name}")
  awslocal sqs set-queue-attributes --queue-url "${dlq_url}" \
    --attributes "{\"MessageRetentionPeriod\":\"${DLQ_RETENTION_SECONDS}\"}"
  dlq_arn=$(queue_arn "${dlq_url}")

  url=$(ensure_queue "${name}")
  # RedrivePolicy is itself a JSON document passed as a string value.
  attributes=$(printf '{"VisibilityTimeout":"%s","RedrivePolicy":"{\\"deadLetterTargetArn\\":\\"%s\\",\\"maxReceiveCount\\":\\"%s\\"}"}' \
    "${VISIBILITY_TIMEOUT}" "${dlq_arn}" "${MAX_RECEIVE_COUNT}")
  awslocal sqs set-queue-attributes --queue-url "${url}" --attributes "${attributes}"

  log "queue ${name} (${url}) -> DLQ ${dlq_arn}"
}

ensure_bucket() {
  if awslocal s3api head-bucket --bucket "$1" >/dev/null 2>&1; then
    log "bucket $1 already exists"
    return
  fi
  if [[ "${AWS_DEFAULT_REGION}" == "us-east-1" ]]; then
    awslocal s3api create-bucket --bucket "$1" >/dev/null
  else
    awslocal s3api create-bucket --bucket "$1" \
      --create-bucket-configuration "LocationConstraint=${AWS_DEFAULT_REGION}" >/dev/null
  fi
  log "bucket $1 created"
}

for pair in "${QUEUES[@]}"; do
  ensure_queue_with_dlq "${pair%%:*}" "${pair#*:}"
done
ensure_bucket "${BUCKET}"

log "done (region ${AWS_DEFAULT_REGION})"
