# Sourced by the benchmark scripts: the account root's key every Berth
# server they start is given (--root-access-key-id), and that every client
# (boto3, the load generators, agents) signs with. Berth verifies each
# request's signature, as it does by default.
export BERTH_ROOT_ACCESS_KEY_ID=AKIABERTHBENCHROOT01
export BERTH_ROOT_SECRET_ACCESS_KEY=berthBenchRootSecret00000000000000000000
export AWS_ACCESS_KEY_ID=$BERTH_ROOT_ACCESS_KEY_ID
export AWS_SECRET_ACCESS_KEY=$BERTH_ROOT_SECRET_ACCESS_KEY
export AWS_DEFAULT_REGION=us-east-1
unset AWS_SESSION_TOKEN AWS_PROFILE
