"""The GPU performance anchor: the reference PyTorch model (tools/reference) at the record
config on one GPU, the record's way (bf16 model with fp32 CastedLinear weights, FlexAttention
with a per-step block mask from a compiled create_block_mask, torch.compile, fused Adam,
compiled bf16 Newton-Schulz Muon, world size 1).

  python3 bench/gpu_anchor.py [--out DIR] [--budget-s 380]    # on the GPU machine
  /usr/bin/python3 bench/gpu_anchor.py --smoke                 # CPU plumbing check
  python3 bench/gpu_anchor.py --table DIR/gpu_anchor.json      # the summary table only

Measures (medians over >= 10 repetitions after warm-up, CUDA events): block-mask creation,
forward+backward, optimizer step and the full step at windows 64 and 1792; peak memory of a
full step; time to first step in a fresh process (cold and warm compile caches); the bf16
GEMM rate (8192^3) and device copy bandwidth as ceilings; MFU. Also eager forward+backward
(model not compiled, flex_attention compiled) and a check of the compiled model's loss
against the eager block-attention path on the same weights.

Synthetic data: one sequence of T+1 tokens; documents open with the EOT token and have
lognormal lengths (sigma 1.0, mean 1000 tokens, median ~607: FineWeb-like); the other
tokens are uniform over the ordinary GPT-2 ids. Four such sequences are rotated.

Every section runs in try/except and the JSON is rewritten after each one, so a failure
or a timeout loses only that section; a watchdog ends the process at --budget-s.
"""
T_START = __import__("time").time()

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REF = os.path.join(HERE, "..", "tools", "reference")
NOMINAL_BF16_TFLOPS = 989.4  # H100/H200 SXM dense bf16, datasheet


# ---------------------------------------------------------------------------------------
# logging, results, deadline

class Run:
    def __init__(self, out, budget_s, quiet_child=False):
        self.out = out
        os.makedirs(out, exist_ok=True)
        self.deadline = T_START + budget_s
        self.results = {"errors": {}, "skipped": {}}
        self.logf = open(os.path.join(out, "gpu_anchor.log" if not quiet_child else "child.log"), "a")
        self.json_path = os.path.join(out, "gpu_anchor.json" if not quiet_child else "child.json")
        self.section_name = None
        self.lock = threading.Lock()
        self.child = None

    def log(self, msg):
        line = f"[{time.time() - T_START:7.1f}s] {msg}"
        with self.lock:
            print(line, flush=True)
            self.logf.write(line + "\n")
            self.logf.flush()

    def left(self):
        return self.deadline - time.time()

    def save(self):
        with self.lock:
            tmp = self.json_path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(self.results, f, indent=1, default=str)
            os.replace(tmp, self.json_path)

    def section(self, name, fn, need_s=0.0):
        """Runs fn() -> dict into results[name]; logs and records any failure."""
        if self.left() < need_s:
            self.results["skipped"][name] = f"{self.left():.0f}s left < {need_s:.0f}s needed"
            self.log(f"SKIP {name}: {self.results['skipped'][name]}")
            self.save()
            return None
        self.section_name = name
        self.log(f"BEGIN {name} ({self.left():.0f}s left)")
        t0 = time.time()
        try:
            res = fn()
            if res is not None:
                self.results[name] = res
            self.log(f"END {name} in {time.time() - t0:.1f}s: {json.dumps(res, default=str)[:600]}")
            return res
        except Exception as e:  # noqa: BLE001 - one failure must not lose the rest
            self.results["errors"][name] = f"{type(e).__name__}: {e}"
            self.log(f"FAIL {name} after {time.time() - t0:.1f}s:\n{traceback.format_exc()}")
            try:
                import torch
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                    torch.cuda.empty_cache()
            except Exception:  # noqa: BLE001
                pass
            return None
        finally:
            self.section_name = None
            self.save()

    def start_watchdog(self, grace_s=8.0):
        def watch():
            while True:
                time.sleep(1.0)
                if time.time() > self.deadline + grace_s:
                    self.results["aborted"] = f"budget exceeded during '{self.section_name}'"
                    self.log(f"WATCHDOG: budget exceeded during '{self.section_name}': exiting")
                    if self.child is not None:
                        try:
                            self.child.kill()
                        except Exception:  # noqa: BLE001
                            pass
                    self.save()
                    os._exit(124)
        threading.Thread(target=watch, daemon=True).start()


# ---------------------------------------------------------------------------------------
# synthetic data and work counts

def synth_tokens(T, eot, seed, mean_len=1000.0, sigma=1.0):
    import numpy as np
    rng = np.random.default_rng(seed)
    toks = rng.integers(0, eot, size=T + 1)  # ordinary ids [0, eot)
    mu = math.log(mean_len) - sigma * sigma / 2
    pos, starts = 0, []
    while pos < T + 1:
        starts.append(pos)
        pos += max(1, int(round(rng.lognormal(mu, sigma))))
    toks[starts] = eot
    return toks


def attention_work(inputs, eot, window, tile=128):
    """(visible (query, key) pairs, non-empty tile x tile blocks) of one sequence."""
    import numpy as np
    T = len(inputs)
    i = np.arange(T)
    ds = np.maximum.accumulate(np.where(inputs == eot, i, 0))
    lo = np.maximum(ds, i - window + 1)
    pairs = int((i - lo + 1).sum())
    nq = (T + tile - 1) // tile
    min_lo = np.full(nq, T, dtype=np.int64)
    np.minimum.at(min_lo, i // tile, lo)
    blocks = int((np.arange(nq) - min_lo // tile + 1).sum())
    return pairs, blocks


def step_flops(cfg, T, pairs, blocks, tile=128):
    """Training FLOPs: 6 * matmul params * tokens, plus attention 4*D per pair per head
    forward and twice that backward (12*H*D per pair per layer)."""
    import model as rmodel
    n = rmodel.matmul_param_count(cfg)
    per_pair = 12 * cfg.heads * cfg.head_dim * cfg.layers
    return {"matmul_params": n, "matmul_flops": 6 * n * T,
            "attn_pairs": pairs, "attn_blocks": blocks,
            "attn_flops_exact": per_pair * pairs, "attn_flops_blocks": per_pair * blocks * tile * tile}


# ---------------------------------------------------------------------------------------
# timing

class Timer:
    def __init__(self, cuda):
        self.cuda = cuda

    def sync(self):
        if self.cuda:
            import torch
            torch.cuda.synchronize()

    def reps(self, fn, n, warmup=1, pre=None, between=None):
        """ms of each of n calls of fn(k) (events on CUDA), after `warmup` untimed calls;
        pre(k) runs untimed before each call, between(k) untimed after it."""
        import torch
        for k in range(warmup):
            if pre:
                pre(k)
            fn(k)
            if between:
                between(k)
        self.sync()
        times = []
        for k in range(n):
            if pre:
                pre(k)
            if self.cuda:
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                fn(k)
                b.record()
                times.append((a, b))
            else:
                t0 = time.perf_counter()
                fn(k)
                times.append(1000 * (time.perf_counter() - t0))
            if between:
                between(k)
        self.sync()
        if self.cuda:
            times = [a.elapsed_time(b) for a, b in times]
        return times


def _dynamo_stats():
    try:
        from torch._dynamo.utils import counters
        return {k: dict(v) for k, v in counters.items() if k in ("stats", "recompiles")}
    except Exception as e:  # noqa: BLE001
        return f"unavailable: {e}"


def summary(ms):
    return {"median_ms": statistics.median(ms), "min_ms": min(ms), "max_ms": max(ms), "n": len(ms)}


# ---------------------------------------------------------------------------------------
# the bench

class Bench:
    def __init__(self, args, run):
        import torch
        sys.path.insert(0, REF)
        import model as rmodel
        import optim as roptim
        self.torch, self.rmodel, self.roptim = torch, rmodel, roptim
        self.args, self.run = args, run
        self.smoke = args.smoke
        self.device = torch.device("cpu" if self.smoke else "cuda")
        self.cuda = self.device.type == "cuda"
        self.timer = Timer(self.cuda)
        if self.smoke:
            self.cfg = rmodel.GPTConfig(layers=2, heads=2, head_dim=16, vocab=512, eot=511)
            self.T = 512
            self.windows = [64, 256]
            self.attention = "dense"
            self.doc_mean = 100.0
        else:
            self.cfg = rmodel.GPTConfig()
            self.T = 65536
            self.windows = [64, 1792]
            self.attention = "flex"
            self.doc_mean = 1000.0
        self.compiled = False
        self.mode = None

    def setup(self):
        torch, rmodel, roptim = self.torch, self.rmodel, self.roptim
        if self.cuda and not self.args.no_cdt:
            import torch._inductor.config as icfg
            if hasattr(icfg, "coordinate_descent_tuning"):
                icfg.coordinate_descent_tuning = True  # as the record
        try:
            torch._logging.set_logs(recompiles=True)
        except Exception:  # noqa: BLE001
            pass
        import numpy as np
        toks = [synth_tokens(self.T, self.cfg.eot, seed, self.doc_mean) for seed in range(4)]
        self.batches = []
        for t in toks:
            t = torch.from_numpy(t.astype(np.int64))
            self.batches.append((t[:-1].view(1, -1).to(self.device), t[1:].view(1, -1).to(self.device)))
        self.work = {}
        for w in self.windows:
            counts = [attention_work(t[:-1], self.cfg.eot, w) for t in toks]
            self.work[w] = (statistics.mean(c[0] for c in counts), statistics.mean(c[1] for c in counts))
        ndocs = [int((t[:-1] == self.cfg.eot).sum()) for t in toks]
        if self.smoke:  # the work counts against the mask rule itself, tile by tile
            for w in self.windows:
                vm = rmodel.visible_mask(rmodel.document_ids(self.batches[0][0], self.cfg.eot), w)[0]
                tiles = vm.view(self.T // 128, 128, self.T // 128, 128).any(3).any(1)
                want = (int(vm.sum()), int(tiles.sum()))
                got = attention_work(toks[0][:-1], self.cfg.eot, w)
                if want != got:
                    raise AssertionError(f"attention_work {got} != mask {want} at window {w}")
        model = rmodel.GPT(self.cfg, attention=self.attention)
        self.run.log(f"model built: {self.cfg}, attention {self.attention}")
        rmodel.init_weights_(model, seed=0)
        model.to(self.device)
        rmodel.set_precision_(model, torch.bfloat16)  # the record's layout
        model.prepare_rotary(self.T, torch.bfloat16, self.device)
        self.model = model
        self.opts = roptim.build_optimizers(model, momentum=0.95, ns_dtype=torch.bfloat16,
                                            fused=self.cuda, compile_ns=self.cuda)
        self.masks = None
        if self.attention == "flex":
            self.masks = rmodel.FlexMaskBuilder(1, self.T, self.cfg.eot, self.device)
        return {"config": vars(self.cfg), "T": self.T, "tokens_per_step": self.T,
                "params": sum(p.numel() for p in model.parameters()),
                "matmul_params": rmodel.matmul_param_count(self.cfg),
                "data": f"synthetic: {len(toks)} sequences of T+1 tokens; each document opens "
                        f"with EOT {self.cfg.eot}, lognormal lengths (sigma 1.0, mean "
                        f"{self.doc_mean:g}); other ids uniform in [0, {self.cfg.eot})",
                "docs_per_sequence": ndocs, "mean_doc_len": self.T / statistics.mean(ndocs),
                "attn_pairs_blocks": {str(w): v for w, v in self.work.items()},
                "param_dtypes": sorted({str(p.dtype) for p in model.parameters()})}

    # -- the pieces of a step
    def mask(self, k, w):
        if self.masks is None:
            return None
        return self.masks(self.batches[k % len(self.batches)][0], w)

    def fwd(self, k, w, bm, model=None):
        x, y = self.batches[k % len(self.batches)]
        f = model if model is not None else self.fwd_fn
        return f(x, y, None if self.masks is not None else w, bm)

    def opt_step(self):
        self.roptim.set_step_hparams(self.opts, 1.0, 0.95)
        for o in self.opts:
            o.step()

    def full_step(self, k, w):
        bm = self.mask(k, w)
        loss = self.fwd(k, w, bm)
        loss.backward()
        self.opt_step()
        self.model.zero_grad(set_to_none=True)
        return loss

    def zero(self, _k=None):
        self.model.zero_grad(set_to_none=True)

    # -- sections
    def first_step(self):
        """Compiles the model and runs the first full step (warm-up included in nothing)."""
        torch = self.torch
        w = self.windows[0]
        t0 = time.time()
        if self.cuda and not self.args.no_compile:
            try:
                self.fwd_fn = torch.compile(self.model)
                loss = self.full_step(0, w)
                self.timer.sync()
                self.mode = "compiled model + compiled flex_attention + compiled create_block_mask"
                self.compiled = True
            except Exception:  # noqa: BLE001
                self.run.log("compiled model failed; falling back to eager model with compiled "
                             f"flex_attention:\n{traceback.format_exc()}")
                self.run.results["errors"]["compile_model"] = traceback.format_exc()[-2000:]
                self.model.zero_grad(set_to_none=True)
                t0 = time.time()
                self.fwd_fn = self.model
                loss = self.full_step(0, w)
                self.timer.sync()
                self.mode = "eager model + compiled flex_attention (model compile FAILED)"
        else:
            self.fwd_fn = self.model
            loss = self.full_step(0, w)
            self.timer.sync()
            self.mode = "eager model (smoke)" if self.smoke else "eager model (--no-compile)"
        dt = time.time() - t0
        l0 = float(loss)
        return {"first_step_s": dt, "mode": self.mode, "loss_step0": l0,
                "ln_vocab": math.log(self.cfg.vocab), "window": w}

    def measure_window(self, w):
        torch = self.torch
        reps = self.args.reps
        res = {"window": w}
        # warm-up full steps (the projections are no longer zero after two of them)
        t0 = time.time()
        self.full_step(1, w)
        self.timer.sync()
        res["first_step_at_this_window_s"] = time.time() - t0  # a recompile would show here
        res["dynamo_stats"] = _dynamo_stats()
        for k in range(2):
            self.full_step(k, w)
        self.timer.sync()

        ms = self.timer.reps(lambda k: self.mask(k, w), reps, warmup=2)
        res["mask"] = summary(ms)

        # A BlockMask from FlexMaskBuilder is valid until the next build (its mask_mod reads
        # the builder's document/window tensors), so each timed call gets a fresh one, built
        # outside the timed region.
        cur = {}

        def build(k):
            cur["bm"] = self.mask(k, w)

        if self.masks is not None:
            bm = self.mask(0, w)
            flex_blocks = int(bm.kv_num_blocks.sum()) + int(bm.full_kv_num_blocks.sum())
            want = attention_work(self.batches[0][0][0].cpu().numpy(), self.cfg.eot, w)[1]
            res["mask_blocks_flex"] = flex_blocks
            res["mask_blocks_expected"] = want
            if flex_blocks != want:
                self.run.log(f"WARNING: block mask has {flex_blocks} non-empty blocks, "
                             f"expected {want}")

        def fb(k):
            self.fwd(k, w, cur["bm"]).backward()
        res["fwd_bwd"] = summary(self.timer.reps(fb, reps, warmup=1, pre=build, between=self.zero))

        build(0)
        fb(0)  # gradients in place for the optimizer timing
        res["optimizer"] = summary(self.timer.reps(lambda k: self.opt_step(), reps, warmup=1))
        self.zero()

        res["full_step"] = summary(self.timer.reps(lambda k: self.full_step(k, w), reps, warmup=1))
        self.timer.sync()
        t0 = time.time()
        for k in range(reps):
            self.full_step(k, w)
        self.timer.sync()
        res["full_step_wall_ms"] = 1000 * (time.time() - t0) / reps

        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.full_step(0, w)
            torch.cuda.synchronize()
            res["peak_mem_bytes"] = torch.cuda.max_memory_allocated()
            res["peak_mem_gib"] = res["peak_mem_bytes"] / 2 ** 30
            res["reserved_gib"] = torch.cuda.max_memory_reserved() / 2 ** 30
        res["loss_last"] = float(self.fwd(0, w, self.mask(0, w)).detach())
        self.zero()

        pairs, blocks = self.work[w]
        fl = step_flops(self.cfg, self.T, pairs, blocks)
        res.update(fl)
        total = fl["matmul_flops"] + fl["attn_flops_exact"]
        step_s = res["full_step"]["median_ms"] / 1000
        res["step_tflops"] = total / step_s / 1e12
        res["tokens_per_s"] = self.T / step_s
        gemm = self.run.results.get("ceilings", {}).get("gemm_bf16_tflops")
        if gemm:
            res["mfu_vs_measured_gemm"] = total / step_s / (gemm * 1e12)
        res["mfu_vs_nominal_989"] = total / step_s / (NOMINAL_BF16_TFLOPS * 1e12)
        return res

    def eager(self):
        """Forward+backward with the model not compiled (flex_attention still compiled:
        uncompiled flex would materialise [T, T] scores)."""
        w = self.windows[-1]
        if self.cuda:
            self.torch.cuda.empty_cache()
        cur = {}

        def build(k):
            cur["bm"] = self.mask(k, w)

        def fb(k):
            self.fwd(k, w, cur["bm"], model=self.model).backward()
        ms = self.timer.reps(fb, max(3, self.args.reps // 3), warmup=1, pre=build, between=self.zero)
        self.zero()
        return {"window": w, "fwd_bwd": summary(ms)}

    def check_against_block(self):
        """Loss of the compiled (flex) model vs the eager block-attention path (plain
        torch ops, same weights, same bf16 layout) on one sequence at each window."""
        torch = self.torch
        out = {}
        for w in self.windows:
            bm = self.mask(0, w)
            l_main = float(self.fwd(0, w, bm).detach())  # grad mode on: no recompile
            self.zero()
            saved = self.model.attention
            try:
                self.model.attention = "block"
                with torch.no_grad():
                    x, y = self.batches[0]
                    l_block = float(self.model(x, y, w))
            finally:
                self.model.attention = saved
            out[str(w)] = {"loss_main": l_main, "loss_block": l_block,
                           "rel_diff": abs(l_main - l_block) / abs(l_block)}
        out["ok"] = all(v["rel_diff"] < 2e-2 for k, v in out.items() if k != "ok")
        return out


def ceilings(args, run):
    import torch
    if args.smoke:
        n, dt, dev, nbytes = 256, torch.float32, "cpu", 16 << 20
    else:
        n, dt, dev, nbytes = 8192, torch.bfloat16, "cuda", 2 << 30
    timer = Timer(dev == "cuda")
    a = torch.randn(n, n, device=dev).to(dt)
    b = torch.randn(n, n, device=dev).to(dt)
    ms = timer.reps(lambda k: a @ b, 10, warmup=3)
    gemm = 2 * n ** 3 / (statistics.median(ms) / 1000) / 1e12
    a = b = None  # free before the copy test
    src = torch.rand(nbytes // 4, device=dev)
    dst = torch.empty_like(src)
    ms2 = timer.reps(lambda k: dst.copy_(src), 10, warmup=3)
    copy = 2 * nbytes / (statistics.median(ms2) / 1000) / 1e9
    src = dst = None
    if dev == "cuda":
        torch.cuda.empty_cache()
    return {"gemm_bf16_tflops": gemm, "gemm_n": n, "gemm_dtype": str(dt), "gemm_ms": summary(ms),
            "copy_gbps": copy, "copy_bytes_each_way": nbytes, "copy_ms": summary(ms2)}


def environment(run):
    import torch
    env = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": sys.version.split()[0],
           "import_torch_s": time.time() - T_START}
    try:
        import triton
        env["triton"] = triton.__version__
    except Exception:  # noqa: BLE001
        env["triton"] = None
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        env.update(device=p.name, sms=p.multi_processor_count, mem_gib=p.total_memory / 2 ** 30)
    try:
        import torch.nn.attention.flex_attention as fa
        env["flex_attention"] = all(hasattr(fa, n) for n in ("flex_attention", "create_block_mask"))
    except Exception as e:  # noqa: BLE001
        env["flex_attention"] = f"unavailable: {e}"
    return env


# ---------------------------------------------------------------------------------------
# time to first step, in a fresh process

def child_main(args):
    """Runs in a fresh process: import torch, build, compile, one full step; writes the
    absolute times to OUT/child.json."""
    run = Run(args.out, args.budget_s, quiet_child=True)
    t_import0 = time.time()
    import torch
    res = {"t_start": T_START, "t_import_done": time.time(), "import_s": time.time() - t_import0}
    run.log(f"child: torch {torch.__version__} imported")
    b = Bench(args, run)
    b.setup()
    res["t_setup_done"] = time.time()
    run.log("child: setup done; first step (compile included)")
    r = b.first_step()
    res["t_first_step_done"] = time.time()
    run.log(f"child: first step done: {r}")
    res.update(first_step=r, torch=torch.__version__)
    run.results = res
    run.save()


def ttfs(args, run, label, cache_dir):
    try:
        import torch
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # leave the child the memory this process only caches
    except Exception:  # noqa: BLE001
        pass
    env = dict(os.environ)
    env["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(cache_dir, "inductor")
    env["TRITON_CACHE_DIR"] = os.path.join(cache_dir, "triton")
    env["PYTHONUNBUFFERED"] = "1"
    child_out = os.path.join(cache_dir, "out")
    os.makedirs(child_out, exist_ok=True)
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--out", child_out,
           "--budget-s", str(max(30, int(run.left() - 15)))]
    if args.smoke:
        cmd.append("--smoke")
    if args.no_cdt:
        cmd.append("--no-cdt")
    timeout = max(20, run.left() - 10)
    t_spawn = time.time()
    with open(os.path.join(cache_dir, "child.stdout"), "w") as so:
        run.child = subprocess.Popen(cmd, stdout=so, stderr=subprocess.STDOUT, env=env)
        try:
            rc = run.child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            run.child.kill()
            run.child.wait()
            rc = "timeout"
        finally:
            run.child = None
    t_end = time.time()
    with open(os.path.join(cache_dir, "child.stdout")) as f:
        tail = f.read()[-3000:]
    run.log(f"{label} child output (tail):\n{tail}")
    res = {"rc": rc, "wall_s": t_end - t_spawn}
    try:
        with open(os.path.join(child_out, "child.json")) as f:
            c = json.load(f)
        res.update(
            time_to_first_step_s=c["t_first_step_done"] - t_spawn,
            interpreter_start_s=c["t_start"] - t_spawn,
            import_torch_s=c["import_s"],
            setup_s=c["t_setup_done"] - c["t_import_done"],
            first_step_s=c["t_first_step_done"] - c["t_setup_done"],
            mode=c["first_step"]["mode"], loss_step0=c["first_step"]["loss_step0"])
    except Exception as e:  # noqa: BLE001
        res["error"] = f"no child result: {e}"
    return res


# ---------------------------------------------------------------------------------------
# the table

def fmt(v, spec=".1f"):
    return "n/a" if v is None else format(v, spec)


def table(results):
    g = lambda *ks: _get(results, ks)  # noqa: E731
    rows = [("| quantity | value |", None), ("|---|---|", None)]
    env = results.get("env", {})
    rows.append((f"| device / torch / triton | {env.get('device', 'n/a')} / {env.get('torch')} / "
                 f"{env.get('triton')} |", None))
    rows.append((f"| mode | {g('first_step', 'mode') or 'n/a'} |", None))
    rows.append((f"| bf16 GEMM 8192^3 (TFLOP/s) | {fmt(g('ceilings', 'gemm_bf16_tflops'))} |", None))
    rows.append((f"| device copy (GB/s, read+write) | {fmt(g('ceilings', 'copy_gbps'), '.0f')} |", None))
    for key in sorted((k for k in results if k.startswith("window_")),
                      key=lambda k: int(k.split("_")[1])):
        w = results[key]["window"]
        rows.append((f"| w={w}: block mask (ms) | {fmt(g(key, 'mask', 'median_ms'), '.2f')} |", None))
        rows.append((f"| w={w}: fwd+bwd (ms) | {fmt(g(key, 'fwd_bwd', 'median_ms'), '.2f')} |", None))
        rows.append((f"| w={w}: optimizer (ms) | {fmt(g(key, 'optimizer', 'median_ms'), '.2f')} |", None))
        rows.append((f"| w={w}: full step (ms, events / wall) | "
                     f"{fmt(g(key, 'full_step', 'median_ms'), '.2f')} / "
                     f"{fmt(g(key, 'full_step_wall_ms'), '.2f')} |", None))
        rows.append((f"| w={w}: tokens/s | {fmt(g(key, 'tokens_per_s'), ',.0f')} |", None))
        rows.append((f"| w={w}: MFU vs measured GEMM / vs 989 | "
                     f"{fmt(_pct(g(key, 'mfu_vs_measured_gemm')))}% / "
                     f"{fmt(_pct(g(key, 'mfu_vs_nominal_989')))}% |", None))
        rows.append((f"| w={w}: peak memory (GiB) | {fmt(g(key, 'peak_mem_gib'), '.2f')} |", None))
    rows.append((f"| first step in-process incl. compile (s) | {fmt(g('first_step', 'first_step_s'))} |", None))
    rows.append((f"| time to first step, fresh process, cold cache (s) | "
                 f"{fmt(g('ttfs_cold', 'time_to_first_step_s'))} |", None))
    rows.append((f"| time to first step, fresh process, warm cache (s) | "
                 f"{fmt(g('ttfs_warm', 'time_to_first_step_s'))} |", None))
    rows.append((f"| eager fwd+bwd at w={g('eager', 'window')} (ms) | "
                 f"{fmt(g('eager', 'fwd_bwd', 'median_ms'), '.2f')} |", None))
    rows.append((f"| loss check vs block attention | {g('check', 'ok')} |", None))
    errs = results.get("errors", {})
    rows.append((f"| errors | {', '.join(sorted(errs)) or 'none'} |", None))
    sk = results.get("skipped", {})
    if sk:
        rows.append((f"| skipped | {', '.join(sorted(sk))} |", None))
    if results.get("aborted"):
        rows.append((f"| aborted | {results['aborted']} |", None))
    return "\n".join(r for r, _ in rows)


def _get(d, ks):
    for k in ks:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _pct(v):
    return None if v is None else 100 * v


# ---------------------------------------------------------------------------------------

def main(argv=None):
    p = argparse.ArgumentParser(description="GPU anchor of the record (reference PyTorch)")
    p.add_argument("--out", default=os.environ.get("OUT") or "./out")
    p.add_argument("--budget-s", type=float, default=380.0,
                   help="the whole process ends by then (watchdog); sections that do not fit skip")
    p.add_argument("--reps", type=int, default=12)
    p.add_argument("--smoke", action="store_true", help="tiny CPU run of the plumbing")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--no-cdt", action="store_true", help="no coordinate-descent tuning")
    p.add_argument("--skip-ttfs", action="store_true")
    p.add_argument("--skip-eager", action="store_true")
    p.add_argument("--no-table", action="store_true", help="do not print the table at the end")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--table", default=None, help="print the table of a result JSON and exit")
    args = p.parse_args(argv)
    if args.table:
        with open(args.table) as f:
            print(table(json.load(f)))
        return 0
    if args.child:
        child_main(args)
        return 0

    run = Run(args.out, args.budget_s)
    run.start_watchdog()
    run.results["args"] = vars(args)
    run.log(f"gpu_anchor start: out={args.out} budget={args.budget_s}s smoke={args.smoke}")
    env = run.section("env", lambda: environment(run))
    if not args.smoke and (not env or "device" not in env):
        run.log("no CUDA device visible: nothing to measure (use --smoke on a CPU machine)")
        run.results["errors"]["env"] = "no CUDA device visible"
        run.save()
        if not args.no_table:
            print(table(run.results))
        return 2
    run.section("ceilings", lambda: ceilings(args, run), need_s=20)
    bench = Bench(args, run)
    ok = run.section("setup", bench.setup, need_s=60)
    if ok is not None:
        ok = run.section("first_step", bench.first_step, need_s=40)
    if ok is not None:
        for w in bench.windows:
            run.section(f"window_{w}", lambda w=w: bench.measure_window(w), need_s=25)
        run.section("check", bench.check_against_block, need_s=20)
    if not args.skip_ttfs:
        with tempfile.TemporaryDirectory(prefix="ttfs_") as d:
            need = 1.3 * (run.results.get("first_step", {}).get("first_step_s") or 60) + 30
            run.section("ttfs_cold", lambda: ttfs(args, run, "ttfs_cold", d), need_s=need)
            if ok is not None and not args.skip_eager:
                run.section("eager", bench.eager, need_s=45)
            if "ttfs_cold" in run.results:
                run.section("ttfs_warm", lambda: ttfs(args, run, "ttfs_warm", d), need_s=40)
    elif ok is not None and not args.skip_eager:
        run.section("eager", bench.eager, need_s=45)
    run.results["total_s"] = time.time() - T_START
    run.save()
    run.log("done")
    if not args.no_table:
        print(table(run.results), flush=True)
    return 0 if not run.results["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
