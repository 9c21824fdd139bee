# Sourced by harness.sh: clients kept apart. nginx maps each X-Api-Key to a client and passes it as
# the FastCGI parameter FANOUT_CLIENT_ID; the client cannot set that parameter itself.

echo "phase 7: clients kept apart (identity from nginx)"
printf '"key-a" client-a;\n"key-b" client-b;\n' >"$RUN_DIR/api-keys.map"
NGINX_CLIENT_KEYS="$RUN_DIR/api-keys.map"
start_stack on FANOUT_CLIENT_IDENTITY_PARAM=FANOUT_CLIENT_ID FANOUT_DATA_DIR="$RUN_DIR/data-clients" \
    FANOUT_MAX_PENDING_JOBS_PER_CLIENT=2 FANOUT_MAX_BATCHES_PER_CLIENT=1 || { fail "stack starts"; exit 1; }
unset NGINX_CLIENT_KEYS
A=(-H 'X-Api-Key: key-a')
B=(-H 'X-Api-Key: key-b')
QUICK='{"tasks":[{"id":"a","op":"echo","input":1}]}'

request anonymous POST /batch "$QUICK"
request forged POST /batch "$QUICK" -H 'Fanout-Client-Id: client-a' -H 'X-Fanout-Client-Id: client-a'
check "no key: 401 problem, whatever headers claim an identity" \
    [ "$(status_of anonymous):$(jq_of anonymous .type):$(status_of forged)" = "401:/problems/unauthenticated:401" ]
request health_clients GET /healthz
request ops_clients GET /ops
check "health and the operation list need no identity" [ "$(status_of health_clients):$(status_of ops_clients)" = 200:200 ]

request job_a POST /batch "$QUICK" "${A[@]}" -H 'Prefer: respond-async' -H 'Idempotency-Key: same-key'
JOB_A=$(jq_of job_a .id)
check "client A's job is accepted" [ "$(status_of job_a)" = 202 -a "$(wait_for_job_as "$JOB_A" "${A[@]}")" = succeeded ]
request read_b GET "/batch/$JOB_A" "" "${B[@]}"
request delete_b DELETE "/batch/$JOB_A" "" "${B[@]}"
check "client B can neither read nor cancel A's job: 404 as for an unknown id" \
    [ "$(status_of read_b):$(jq_of read_b .type):$(status_of delete_b):$(jq_of delete_b .type)" = "404:/problems/job-not-found:404:/problems/job-not-found" ]
request read_a GET "/batch/$JOB_A" "" "${A[@]}"
check "client A reads its own job" [ "$(status_of read_a):$(jq_of read_a .status)" = "200:succeeded" ]
request replay_b POST /batch "$QUICK" "${B[@]}" -H 'Prefer: respond-async' -H 'Idempotency-Key: same-key'
request replay_a POST /batch "$QUICK" "${A[@]}" -H 'Prefer: respond-async' -H 'Idempotency-Key: same-key'
check "idempotency keys are per client: B's equal key makes B's own job, A's replays A's" \
    [ "$(jq_of replay_b .id)" != "$JOB_A" -a -z "$(header_of replay_b Idempotent-Replayed)" \
        -a "$(jq_of replay_a .id)" = "$JOB_A" -a "$(header_of replay_a Idempotent-Replayed)" = true ]

LONG='{"tasks":[{"id":"s","op":"sleep","input":{"ms":3000}}]}'
request long_a1 POST /batch "$LONG" "${A[@]}" -H 'Prefer: respond-async'
request long_a2 POST /batch "$LONG" "${A[@]}" -H 'Prefer: respond-async'
request long_a3 POST /batch "$LONG" "${A[@]}" -H 'Prefer: respond-async'
request long_b1 POST /batch "$QUICK" "${B[@]}" -H 'Prefer: respond-async'
check "past its pending-jobs limit a client gets 429 with Retry-After; another client does not" \
    [ "$(status_of long_a1):$(status_of long_a2):$(status_of long_a3):$(jq_of long_a3 .type):$(status_of long_b1)" = "202:202:429:/problems/too-many-jobs:202" \
        -a -n "$(header_of long_a3 Retry-After)" ]

curl -s -o /dev/null "${A[@]}" -H 'Content-Type: application/json' -d '{"tasks":[{"id":"s","op":"sleep","input":{"ms":1500}}]}' "$BASE/batch" &
SLOW_A=$!
sleep 0.4
request second_a POST /batch "$QUICK" "${A[@]}"
request first_b POST /batch "$QUICK" "${B[@]}"
check "past its batches-in-flight limit a client gets 429 with Retry-After; another client is served" \
    [ "$(status_of second_a):$(jq_of second_a .type):$(status_of first_b)" = "429:/problems/too-many-requests:200" \
        -a -n "$(header_of second_a Retry-After)" ]
wait $SLOW_A

# The same through keys nginx keeps only as salted hashes (nginx/fanout-client-hashed-keys.conf),
# on a second nginx in front of the same Fanout.
hashed() { python3 -c 'import base64, hashlib, os, sys; salt = os.urandom(16); print(sys.argv[1] + ":{SSHA}" + base64.b64encode(hashlib.sha1(sys.argv[2].encode() + salt).digest() + salt).decode())' "$1" "$2"; }
{ hashed client-a key-a; hashed client-b key-b; } >"$RUN_DIR/api-keys.htpasswd"
KEYS_PORT=$(free_port)
mkdir -p "$RUN_DIR/nginx-keys"
sed "s|/etc/nginx/fanout-api-keys.htpasswd|$RUN_DIR/api-keys.htpasswd|" "$FANOUT_ROOT/nginx/fanout-client-hashed-keys.conf" \
    >"$RUN_DIR/nginx-keys/client-auth.conf"
cat >"$RUN_DIR/nginx-keys/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $RUN_DIR/nginx-keys/nginx.pid;
error_log stderr warn;
$([ "$(id -u)" -ne 0 ] || echo "user root;")
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path $RUN_DIR/nginx-keys;
    fastcgi_temp_path $RUN_DIR/nginx-keys;
    server {
        listen 127.0.0.1:$KEYS_PORT;
        location / {
            include $FANOUT_ROOT/nginx/fanout_params;
            include $RUN_DIR/nginx-keys/client-auth.conf;
            fastcgi_pass unix:$RUN_DIR/fanout.sock;
        }
    }
}
CONF
"$(nginx_binary)" -p "$RUN_DIR/nginx-keys" -c "$RUN_DIR/nginx-keys/nginx.conf" -e stderr 2>>"$RUN_DIR/nginx-keys/nginx.log" &
KEYS_NGINX=$!
for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$KEYS_PORT/healthz" && break; sleep 0.05; done
KEYS_BASE="http://127.0.0.1:$KEYS_PORT"
# (Client A is at its pending-jobs limit from above: B submits here.)
HASHED_B=$(curl -s -u client-b:key-b -H 'Prefer: respond-async' -H 'Content-Type: application/json' -d "$QUICK" "$KEYS_BASE/batch" | jq -r .id)
code_as() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
check "hashed keys: a wrong key, another client's key or none is refused by nginx (401)" \
    [ "$(code_as -u client-b:key-a "$KEYS_BASE/batch/$HASHED_B"):$(code_as -u client-b:nope "$KEYS_BASE/batch/$HASHED_B"):$(code_as "$KEYS_BASE/batch/$HASHED_B")" = "401:401:401" ]
check "hashed keys: B's job is B's: A cannot read it (404), B can" \
    [ "$(code_as -u client-a:key-a "$KEYS_BASE/batch/$HASHED_B"):$(code_as -u client-b:key-b "$KEYS_BASE/batch/$HASHED_B")" = "404:200" ]
check "hashed keys: the identity is the one the map gave (A's job through the map is A's here too)" \
    [ "$(code_as -u client-a:key-a "$KEYS_BASE/batch/$JOB_A")" = 200 ]
kill "$KEYS_NGINX" 2>/dev/null
wait "$KEYS_NGINX" 2>/dev/null
stop_stack
