#!/usr/bin/env bash
# bench/gpu_check.sh: every CUDA path of nanoseek once, on one GPU, in under 8 minutes, with a markdown
# report: the script to run the moment a GPU is available (docs/toy_to_cluster.md says what has run).
#
#   bash bench/gpu_check.sh                     # report in $OUT/gpu_check.md ($OUT unset: runs/gpu_check)
#   bash bench/gpu_check.sh --out DIR           # report, logs and run directories under DIR
#   bash bench/gpu_check.sh --dry-run           # print the steps and their commands; runs nothing
#   bash bench/gpu_check.sh --only grouped_mm,serve
#   VLLM_PYTHON=/path/to/venv/bin/python bash bench/gpu_check.sh    # vLLM in another environment
#   bash bench/gpu_check.sh --device cpu        # a rehearsal of the script itself on the CPU (not a GPU check)
#
# Steps, in order; each runs under its own time limit (together 475 s), is timed, and has its exit status
# recorded; a failing step does not stop the others (a step whose input a failed step should have made
# fails quickly, and says so in its log):
#   env             nvidia-smi; torch, CUDA, bf16 support, torch._grouped_mm, vLLM's version
#   grouped_mm      the MoE experts on CUDA in bf16 through torch._grouped_mm (calls counted), against the
#                   CPU fp32 loop, forward and backward
#   pretrain_bf16   nanoseek pretrain cpu_toy.toml (DeepSeek-V3 MoE + MTP) on CUDA, bf16 autocast, 40 steps
#   pretrain_dense  the same for cpu_toy_llama.toml (a dense Llama: the model vLLM steps use)
#   fsdp2           torchrun --nproc_per_node 1: pretrain with train.fsdp=true (FSDP2 fully_shard, NCCL)
#   grpo_native     nanoseek grpo from pretrain_bf16's model, rollouts on the native engine on CUDA (random
#                   rewards, so every group has a spread and every step updates the policy)
#   grpo_vllm       nanoseek grpo from pretrain_dense's model with rollout.backend=vllm (weights synced into
#                   vLLM after every update)
#   eval_vllm       nanoseek eval --backend vllm on pretrain_dense's model (the native `nanoseek eval` has no
#                   --device: it generates on the CPU, so it is no CUDA path)
#   serve           nanoseek serve --device cuda on grpo_native's model: a chat completion and a streamed one
# Exit status: 0 if every step passed, 1 if any failed, 2 without CUDA (or on bad arguments).

set -u
cd "$(dirname "$0")/.." || exit 2 # the repository root: recipes and bench/ are read from here

PY=${PYTHON:-python}
VPY=${VLLM_PYTHON:-$PY}
DEVICE=cuda
DRY=0
ONLY=""
OUTDIR=${OUT:-$PWD/runs/gpu_check}
STEPS=(env grouped_mm pretrain_bf16 pretrain_dense fsdp2 grpo_native grpo_vllm eval_vllm serve)
declare -A LIMIT=([env]=15 [grouped_mm]=30 [pretrain_bf16]=60 [pretrain_dense]=40 [fsdp2]=60
  [grpo_native]=60 [grpo_vllm]=90 [eval_vllm]=75 [serve]=45)
declare -A WHAT=(
  [env]="GPU, driver, torch / CUDA versions, bf16, torch._grouped_mm, vLLM"
  [grouped_mm]="MoE experts through torch._grouped_mm in bf16 vs the CPU fp32 loop, fwd + bwd"
  [pretrain_bf16]="pretrain DeepSeek-V3 MoE + MTP, bf16 autocast, 40 steps"
  [pretrain_dense]="pretrain a dense Llama, bf16 autocast, 40 steps"
  [fsdp2]="torchrun, 1 process: pretrain with FSDP2 (fully_shard), 20 steps"
  [grpo_native]="GRPO, native engine rollouts, 4 steps"
  [grpo_vllm]="GRPO, vLLM rollouts (rollout.backend=vllm), 4 steps"
  [eval_vllm]="eval --backend vllm, 16 problems x 2"
  [serve]="nanoseek serve on the device: a chat completion and a streamed one"
)

usage() { sed -n '2,/^# Exit status/p' "$0" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUTDIR=$2; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    --only) ONLY=$2; shift 2 ;;
    --device) DEVICE=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "gpu_check: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ -n "$ONLY" ]; then
  for name in ${ONLY//,/ }; do
    [ -n "${LIMIT[$name]:-}" ] || { echo "gpu_check: --only: no step $name (steps: ${STEPS[*]})" >&2; exit 2; }
  done
  STEPS=(${ONLY//,/ })
fi
case "$DEVICE" in
  cuda) SCALE=1 DTYPE=bf16 ;;
  cpu) SCALE=12 DTYPE=fp32 ;; # a rehearsal on a laptop CPU: the same steps in fp32 (bf16 is slow there)
  *) echo "gpu_check: --device is cuda or cpu" >&2; exit 2 ;;
esac
RUNS=$OUTDIR/runs
LOGS=$OUTDIR/logs
REPORT=$OUTDIR/gpu_check.md
export PY VPY DEVICE DTYPE RUNS
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4} TOKENIZERS_PARALLELISM=false

# ----------------------------------------------------------------------------------------------- steps
# Each step is a function run as `timeout LIMIT bash -c step_NAME` with PY, VPY, DEVICE, DTYPE, RUNS set.
# A pretraining run's directory gets a one-line summary (loss, tokens/s, MFU) from run_summary.

run_summary() {
  "$PY" - "$1" <<'EOF'
import json, sys
from pathlib import Path
rows = [json.loads(line) for line in (Path(sys.argv[1]) / "metrics.jsonl").read_text().splitlines()]
train = [r for r in rows if r.get("type") == "train"]
first, last = train[0], train[-1]
keys = [k for k in ("loss", "tokens_per_s", "mfu", "grad_norm", "logp_mismatch", "gen_seconds") if k in last]
print(f"SUMMARY steps {last.get('step')}: " + ", ".join(f"{k} {first[k]:.4g} -> {last[k]:.4g}" for k in keys if k in first))
EOF
}

step_env() {
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi"
  "$PY" - <<'EOF'
import torch
cuda = torch.cuda.is_available()
print("torch", torch.__version__, "CUDA", torch.version.cuda, "available", cuda)
if cuda:
    print("device", torch.cuda.get_device_name(0), "capability", torch.cuda.get_device_capability(0))
    print("bf16", torch.cuda.is_bf16_supported())
print("torch._grouped_mm", hasattr(torch, "_grouped_mm"))
EOF
  "$VPY" -c "import vllm; print('vLLM', vllm.__version__)" 2>/dev/null || echo "vLLM not importable by $VPY"
  echo "SUMMARY $("$PY" -c "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'CPU', 'torch', torch.__version__)")"
}

step_grouped_mm() {
  "$PY" - "$DEVICE" <<'EOF'
import sys
import torch
from nanoseek.model import kernels

device = sys.argv[1]
calls = 0
grouped = torch._grouped_mm

def counted(*args, **kwargs):
    global calls
    calls += 1
    return grouped(*args, **kwargs)

torch._grouped_mm = counted
g = torch.Generator().manual_seed(0)
N, K, E, C, I = 512, 2, 8, 256, 128  # tokens, experts per token, experts, hidden, expert width
x = torch.randn(N, C, generator=g)
ids = torch.stack([torch.randperm(E, generator=g)[:K] for _ in range(N)])
w = torch.rand(N, K, generator=g)
gate, up = (torch.randn(E, C, I, generator=g) * C**-0.5 for _ in range(2))
down = torch.randn(E, I, C, generator=g) * I**-0.5
reference = kernels.experts_ffn(x, ids, w, gate, up, down)  # the CPU fp32 loop
dtype = torch.bfloat16 if device == "cuda" else torch.float32
args = [t.to(device, dtype).requires_grad_() for t in (x, gate, up, down)]
out = kernels.experts_ffn(args[0], ids.to(device), w.to(device, dtype), *args[1:])
error = float((out.detach().float().cpu() - reference).abs().max() / reference.abs().max())
out.float().square().sum().backward()
finite = all(bool(t.grad.isfinite().all()) for t in args)
print(f"SUMMARY {device} {dtype}: max error {error:.2e} of the largest output, grads finite {finite}, "
      f"torch._grouped_mm calls {calls}")
assert finite and error < 3e-2, "experts_ffn on the GPU disagrees with the CPU loop"
assert device != "cuda" or calls >= 3, "the CUDA path did not use torch._grouped_mm"
EOF
}

pretrain() { # RECIPE OUT [extra overrides...]
  local recipe=$1 out=$2
  shift 2
  rm -rf "$out" # a run of its own, not a resumed one
  "$PY" -m nanoseek.cli pretrain "nanoseek/recipes/$recipe" --out "$out" "run.device=$DEVICE" \
    "train.dtype=$DTYPE" train.max_steps=40 data.synthetic_examples=3000 data.vocab_size=1024 eval.every=20 eval.batches=2 \
    eval.sample_every=0 checkpoint.every=40 "$@" && run_summary "$out"
}
step_pretrain_bf16() { pretrain cpu_toy.toml "$RUNS/pretrain"; }
step_pretrain_dense() { pretrain cpu_toy_llama.toml "$RUNS/dense"; }

step_fsdp2() {
  rm -rf "$RUNS/fsdp2"
  "$PY" -m torch.distributed.run --standalone --nproc_per_node 1 -m nanoseek.train.cli pretrain \
    nanoseek/recipes/cpu_toy.toml --out "$RUNS/fsdp2" "run.device=$DEVICE" train.fsdp=true "train.dtype=$DTYPE" \
    train.max_steps=20 data.synthetic_examples=2000 data.vocab_size=1024 eval.every=0 eval.sample_every=0 checkpoint.every=20 &&
    run_summary "$RUNS/fsdp2"
}

grpo() { # PYTHON INIT OUT [extra overrides...]
  local python=$1 init=$2 out=$3
  shift 3
  rm -rf "$out"
  "$python" -m nanoseek.cli grpo --init "$init" --out "$out" --task "arithmetic?digits=1" "run.device=$DEVICE" \
    train.max_steps=4 rollout.prompts_per_step=8 rollout.group_size=4 rollout.max_new_tokens=48 \
    eval.every=0 eval.problems=16 reward.random=true run.progress=false "$@" && run_summary "$out"
}
step_grpo_native() { grpo "$PY" "$RUNS/pretrain" "$RUNS/grpo_native"; }
step_grpo_vllm() { grpo "$VPY" "$RUNS/dense" "$RUNS/grpo_vllm" rollout.backend=vllm; }

step_eval_vllm() {
  rm -rf "$RUNS/eval_vllm"
  "$VPY" -m nanoseek.cli eval --model "$RUNS/dense" --backend vllm --tasks "arithmetic?digits=1" \
    --max-problems 16 --k 2 --max-new-tokens 48 --out "$RUNS/eval_vllm" --no-progress &&
    "$PY" -c "import json, sys; t = json.load(open(sys.argv[1]))['total']; print('SUMMARY', t['samples'], \
'samples,', t['completion_tokens'], 'completion tokens')" "$RUNS/eval_vllm/summary.json"
}

step_serve() {
  "$PY" - "$RUNS/grpo_native" "$DEVICE" <<'EOF'
import json, socket, subprocess, sys, time
import httpx
from nanoseek.model.run_dirs import resolve_model_dir

model, device = resolve_model_dir(sys.argv[1]), sys.argv[2]
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
server = subprocess.Popen([sys.executable, "-m", "nanoseek.cli", "serve", "--model", str(model), "--device",
                          device, "--port", str(port), "--max-slots", "8", "--log-level", "warning"])
url = f"http://127.0.0.1:{port}"
try:
    for _ in range(120):
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert server.poll() is None, f"the server exited ({server.returncode})"
        time.sleep(0.5)
    body = {"messages": [{"role": "user", "content": "What is 3 + 4?"}], "max_completion_tokens": 32,
            "temperature": 0}
    t0 = time.perf_counter()
    reply = httpx.post(url + "/v1/chat/completions", json=body, timeout=60)
    reply.raise_for_status()
    usage = reply.json()["usage"]
    seconds = time.perf_counter() - t0
    chunks = []
    with httpx.stream("POST", url + "/v1/chat/completions", json=body | {"stream": True}, timeout=60) as r:
        r.raise_for_status()
        chunks = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert chunks and chunks[-1] == "data: [DONE]", chunks[-3:]
    print(f"SUMMARY {usage['completion_tokens']} tokens in {seconds:.2f} s; stream: {len(chunks)} events, ends [DONE]")
finally:
    server.terminate()
    server.wait(30)
EOF
}

export -f run_summary pretrain grpo "${STEPS[@]/#/step_}"

# ----------------------------------------------------------------------------------------------- driver
if [ "$DRY" = 1 ]; then
  echo "gpu_check: ${#STEPS[@]} steps on $DEVICE (report: $REPORT); PY=$PY VLLM_PYTHON=$VPY RUNS=$RUNS"
  echo
  echo "## helpers"
  declare -f run_summary pretrain grpo
  for name in "${STEPS[@]}"; do
    echo
    echo "## $name (limit $((LIMIT[$name] * SCALE)) s): ${WHAT[$name]}"
    declare -f "step_$name" | tail -n +3 | sed '$d'
  done
  exit 0
fi
if [ "$DEVICE" = cuda ] && ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
  echo "gpu_check: no CUDA device: torch.cuda.is_available() is False for $PY (or torch is missing)." >&2
  echo "gpu_check: this check needs one NVIDIA GPU; --dry-run prints its steps, --device cpu rehearses them." >&2
  exit 2
fi

mkdir -p "$RUNS" "$LOGS"
start=$(date +%s)
{
  echo "# nanoseek GPU check"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), device $DEVICE, commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo "$( [ -n "$(git status --porcelain 2>/dev/null)" ] && echo '(with uncommitted changes)')"
  echo
  echo "| step | what | status | seconds | limit | result |"
  echo "|---|---|---|---|---|---|"
} >"$REPORT"
failed=0
for name in "${STEPS[@]}"; do
  limit=$((LIMIT[$name] * SCALE))
  log=$LOGS/$name.log
  echo "gpu_check: $name (limit $limit s)..." >&2
  t0=$(date +%s%N)
  timeout -k 10 "$limit" bash -c "set -o pipefail; step_$name" >"$log" 2>&1
  status=$?
  seconds=$(awk -v a="$t0" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
  case $status in
    0) verdict=pass ;;
    124 | 137) verdict="FAIL (timed out)"; failed=1 ;;
    *) verdict="FAIL (exit $status)"; failed=1 ;;
  esac
  result=$(grep '^SUMMARY ' "$log" | tail -1 | cut -c9- | tr '|' '/')
  [ -n "$result" ] || result=$(grep -v '^\s*$' "$log" | tail -1 | cut -c1-160 | tr '|' '/')
  echo "| $name | ${WHAT[$name]} | $verdict | $seconds | $limit | $result |" >>"$REPORT"
  echo "gpu_check: $name: $verdict in $seconds s" >&2
done
{
  echo
  echo "Total $(($(date +%s) - start)) s. Logs: $LOGS/<step>.log; runs: $RUNS."
  for name in "${STEPS[@]}"; do
    if ! grep -q "^| $name | .* | pass |" "$REPORT"; then
      echo
      echo "### $name: the end of its log"
      echo
      echo '```'
      tail -n 25 "$LOGS/$name.log"
      echo '```'
    fi
  done
} >>"$REPORT"
cat "$REPORT"
exit $failed
