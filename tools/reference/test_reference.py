"""Self-checks of the reference implementation (CPU, any torch >= 1.13).

  /usr/bin/python3 -m unittest tools/reference/test_reference.py
  /usr/bin/python3 tools/reference/test_reference.py
"""
import json
import math
import os
import struct
import sys
import tempfile
import unittest

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import data as rdata  # noqa: E402
import model as rmodel  # noqa: E402
import optim as roptim  # noqa: E402
import train as rtrain  # noqa: E402

torch.set_num_threads(1)  # small problems; threads only add noise here


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def write_bytes(path, b):
    with open(path, "wb") as f:
        f.write(b)


def functional_call(module, params, args):
    try:
        from torch.func import functional_call as fc
    except ImportError:
        from torch.nn.utils.stateless import functional_call as fc
    return fc(module, params, args)


MICRO = rmodel.GPTConfig(layers=2, heads=2, head_dim=8, vocab=32, eot=31)


def micro_batch(T=24, B=1, seed=0):
    """Tokens with two documents per row: EOT at 0 and at T//2 - 1; the rest non-EOT."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, MICRO.eot, (B, T + 1), generator=g)
    idx[:, 0] = MICRO.eot
    idx[:, T // 2 - 1] = MICRO.eot
    return idx[:, :-1].contiguous(), idx[:, 1:].contiguous()


def random_model(cfg, seed=0, dtype=torch.float64, attention="dense", tile=128):
    """Every parameter random (no zero projections), so every gradient path is live."""
    m = rmodel.GPT(cfg, attention=attention, tile=tile)
    rmodel.set_precision_(m, dtype)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in m.named_parameters():
            r = torch.randn(p.shape, generator=g, dtype=torch.float64)
            if p.dim() == 2 and "wte" not in name:
                r = r / math.sqrt(p.shape[1])
            elif p.dim() < 2:
                r = 0.5 + 0.3 * r
            p.copy_(r.to(dtype))
    return m


class TestGradient(unittest.TestCase):
    """The dense model's analytic gradient against finite differences in float64."""

    @classmethod
    def setUpClass(cls):
        cls.model = random_model(MICRO)
        cls.x, cls.y = micro_batch()
        cls.names = [n for n, _ in cls.model.named_parameters()]
        cls.params = {n: p.detach().clone() for n, p in cls.model.named_parameters()}

    def loss_of(self, subset, window):
        def f(*tensors):
            params = dict(self.params)
            params.update(dict(zip(subset, tensors)))
            return functional_call(self.model, params, (self.x, self.y, window))
        return f

    def check(self, subset, window, fast):
        inputs = tuple(self.params[n].clone().requires_grad_(True) for n in subset)
        ok = torch.autograd.gradcheck(self.loss_of(subset, window), inputs, eps=1e-6,
                                      atol=1e-8, rtol=1e-5, fast_mode=fast)
        self.assertTrue(ok)

    def test_every_parameter_directional(self):
        # fast mode: a random directional derivative per tensor, one tensor at a time so
        # that a wrong gradient of one tensor cannot hide behind the others
        for n in self.names:
            with self.subTest(param=n):
                self.check([n], window=8, fast=True)

    def test_scalars_elementwise(self):
        scalars = [n for n in self.names if self.params[n].dim() < 2]
        self.check(scalars, window=8, fast=False)

    def test_matrices_elementwise(self):
        self.check(["transformer.h.0.attn.c_q.weight", "transformer.h.1.attn.c_v.weight"],
                   window=5, fast=False)

    def test_first_lamb_gradient_is_exactly_zero(self):
        m = random_model(MICRO, seed=3)
        m(self.x, self.y, 8).backward()
        self.assertEqual(m.transformer.h[0].attn.lamb.grad.item(), 0.0)
        self.assertNotEqual(m.transformer.h[1].attn.lamb.grad.item(), 0.0)


class TestAttention(unittest.TestCase):
    def test_mask_rule(self):
        idx = torch.tensor([[5, 31, 3, 4, 31, 31, 7, 8, 9]])
        docs = rmodel.document_ids(idx, 31)
        self.assertEqual(docs.tolist(), [[0, 1, 1, 1, 2, 3, 3, 3, 3]])
        for window in (1, 2, 3, 9):
            m = rmodel.visible_mask(docs, window)[0]
            for i in range(9):
                for j in range(9):
                    want = j <= i and docs[0, i] == docs[0, j] and i - j < window
                    self.assertEqual(bool(m[i, j]), bool(want), (window, i, j))

    def test_block_equals_dense(self):
        g = torch.Generator().manual_seed(1)
        B, H, T, D = 2, 2, 53, 8
        q, k, v = (torch.randn(B, H, T, D, generator=g, dtype=torch.float64) for _ in range(3))
        idx = torch.randint(0, 10, (B, T), generator=g)
        idx[0, [0, 7, 30]] = 9
        idx[1, [20, 21]] = 9
        docs = rmodel.document_ids(idx, 9)
        for window in (1, 7, 16, 64):
            for tile in (5, 16, 128):
                want = rmodel.attention_dense(q, k, v, docs, window)
                got = rmodel.attention_block(q, k, v, docs, window, tile)
                self.assertLess((want - got).abs().max().item(), 1e-12, (window, tile))

    def test_block_model_gradients_match_dense(self):
        x, y = micro_batch(T=40, B=2, seed=4)
        grads = {}
        for att in ("dense", "block"):
            m = random_model(MICRO, seed=5, attention=att, tile=8)
            loss = m(x, y, 12)
            loss.backward()
            grads[att] = (loss.item(), {n: p.grad.clone() for n, p in m.named_parameters()})
        self.assertAlmostEqual(grads["dense"][0], grads["block"][0], delta=1e-12)
        for n, gd in grads["dense"][1].items():
            self.assertLess((gd - grads["block"][1][n]).abs().max().item(), 1e-11, n)


class TestModel(unittest.TestCase):
    def test_initial_loss_is_ln_vocab(self):
        for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 2e-6)):
            m = rmodel.init_weights_(rmodel.GPT(MICRO), seed=0)
            rmodel.set_precision_(m, dtype)
            x, y = micro_batch(T=24, B=2)
            loss = m(x, y, 64)
            self.assertLess(abs(loss.item() - math.log(MICRO.vocab)), tol, dtype)

    def test_step0_gradients_only_in_lm_head(self):
        m = rmodel.init_weights_(rmodel.GPT(MICRO), seed=1)
        x, y = micro_batch()
        m(x, y, 64).backward()
        for n, p in m.named_parameters():
            if n == "lm_head.weight":
                self.assertGreater(p.grad.abs().max().item(), 0.0)
            else:
                self.assertEqual(p.grad.abs().max().item(), 0.0, n)

    def test_init_values(self):
        m = rmodel.init_weights_(rmodel.GPT(MICRO), seed=2)
        sd = m.state_dict()
        for n, t in sd.items():
            self.assertTrue(torch.equal(t, t.bfloat16().float()), n + " not bf16-representable")
        self.assertEqual(sd["transformer.h.1.lambdas"].tolist(), [1.0, 0.0])
        self.assertEqual(sd["transformer.h.0.attn.lamb"].item(), 0.5)
        self.assertEqual(sd["transformer.h.0.attn.lamb"].dim(), 0)
        self.assertEqual(sd["skip_weights"].tolist(), [1.0])
        self.assertEqual(sd["lm_head.weight"].abs().max().item(), 0.0)
        self.assertEqual(sd["transformer.h.0.mlp.c_proj.weight"].abs().max().item(), 0.0)
        self.assertEqual(sd["transformer.h.0.attn.c_proj.weight"].abs().max().item(), 0.0)
        bound = 1 / math.sqrt(MICRO.width)
        cq = sd["transformer.h.0.attn.c_q.weight"]
        self.assertLessEqual(cq.abs().max().item(), bound * (1 + 2 ** -8))
        self.assertGreater(cq.abs().max().item(), 0.8 * bound)
        self.assertEqual(tuple(sd["transformer.h.0.mlp.c_fc.weight"].shape), (64, 16))

    def test_rotary_formula(self):
        x = torch.randn(1, 5, 1, 8, dtype=torch.float64)
        cos, sin = rmodel.rotary_tables(5, 8, 10000.0, torch.float64, "cpu")
        y = rmodel.apply_rotary(x, cos, sin)
        for t in range(5):
            for j in range(4):
                ang = t * 10000.0 ** (-2 * j / 8)
                x1, x2 = x[0, t, 0, j].item(), x[0, t, 0, j + 4].item()
                self.assertAlmostEqual(y[0, t, 0, j].item(), x1 * math.cos(ang) + x2 * math.sin(ang),
                                       delta=1e-6)
                self.assertAlmostEqual(y[0, t, 0, j + 4].item(),
                                       -x1 * math.sin(ang) + x2 * math.cos(ang), delta=1e-6)

    def test_rows_are_independent_sequences(self):
        m = random_model(MICRO, seed=6, dtype=torch.float64)
        x, y = micro_batch(T=24, B=2, seed=7)
        both = m(x, y, 10).item()
        each = sum(m(x[i:i + 1], y[i:i + 1], 10).item() for i in range(2)) / 2
        self.assertAlmostEqual(both, each, delta=1e-12)


class TestSchedules(unittest.TestCase):
    def test_lr_landmarks(self):
        N, cd = 1750, 640
        self.assertEqual(roptim.lr_multiplier(0, N, cd), 1.0)
        self.assertEqual(roptim.lr_multiplier(1109, N, cd), 1.0)
        self.assertEqual(roptim.lr_multiplier(1110, N, cd), 640 / 640)
        self.assertEqual(roptim.lr_multiplier(1111, N, cd), 639 / 640)
        self.assertEqual(roptim.lr_multiplier(1749, N, cd), 1 / 640)
        self.assertEqual(roptim.lr_multiplier(0, 100, 10, warmup=4), 0.25)
        self.assertEqual(roptim.lr_multiplier(3, 100, 10, warmup=4), 1.0)

    def test_window_landmarks(self):
        N = 1750
        w = [roptim.attention_window(s, N) for s in range(N + 1)]
        self.assertEqual(w[0], 64)
        self.assertEqual(w[1749], 1728)
        self.assertEqual(w[1750], 1792)
        self.assertTrue(all(v % 64 == 0 for v in w))
        self.assertTrue(all(a <= b for a, b in zip(w, w[1:])))
        for s in range(N + 1):  # the record's expression, literally
            self.assertEqual(w[s], int(64 * ((s / N * (1792 - 64) + 64) // 64)))
        self.assertEqual(roptim.attention_window(5, N, 64, 1024, "fixed"), 1024)

    def test_momentum(self):
        self.assertEqual(roptim.muon_momentum(0), 0.85)
        self.assertAlmostEqual(roptim.muon_momentum(150), 0.90, delta=1e-15)
        self.assertAlmostEqual(roptim.muon_momentum(300), 0.95, delta=1e-15)
        self.assertAlmostEqual(roptim.muon_momentum(1000), 0.95, delta=1e-15)
        self.assertAlmostEqual(roptim.muon_momentum(250, 500, 0.85, 0.95), 0.90, delta=1e-15)


class TestOptimizers(unittest.TestCase):
    def test_adam_is_spec_formula(self):
        g = torch.Generator().manual_seed(0)
        p = torch.randn(7, generator=g, dtype=torch.float64)
        grads = [torch.randn(7, generator=g, dtype=torch.float64) for _ in range(4)]
        lrs = [0.6, 0.6, 0.3, 0.1]
        param = torch.nn.Parameter(p.clone())
        opt = torch.optim.Adam([param], lr=1.0, betas=(0.8, 0.95), eps=1e-8)
        ref = p.numpy().copy()
        m = np.zeros(7)
        v = np.zeros(7)
        for t, (gr, lr) in enumerate(zip(grads, lrs), start=1):
            param.grad = gr.clone()
            opt.param_groups[0]["lr"] = lr
            opt.step()
            gn = gr.numpy()
            m = 0.8 * m + 0.2 * gn
            v = 0.95 * v + 0.05 * gn * gn
            ref = ref - (lr / (1 - 0.8 ** t)) * m / (np.sqrt(v) / np.sqrt(1 - 0.95 ** t) + 1e-8)
        self.assertLess(np.abs(param.detach().numpy() - ref).max(), 1e-12)

    @staticmethod
    def ns_numpy(G, steps=5):
        a, b, c = 3.4445, -4.7750, 2.0315
        X = G / (np.linalg.norm(G) + 1e-7)
        tall = G.shape[0] > G.shape[1]
        if tall:
            X = X.T
        for _ in range(steps):
            A = X @ X.T
            X = a * X + (b * A + c * A @ A) @ X
        return X.T if tall else X

    def test_muon_step_is_spec_formula(self):
        g = torch.Generator().manual_seed(1)
        shapes = [(6, 4), (4, 6), (5, 5), (16, 4)]
        ps = [torch.nn.Parameter(torch.randn(s, generator=g, dtype=torch.float64)) for s in shapes]
        ref = [p.detach().numpy().copy() for p in ps]
        bufs = [np.zeros(s) for s in shapes]
        opt = roptim.Muon(ps, lr=0.05, momentum=0.85, ns_dtype=torch.float64)
        for it in range(3):
            mom = roptim.muon_momentum(it, 2)
            lr = 0.05 * (1 - it / 4)
            opt.param_groups[0]["momentum"] = mom
            opt.param_groups[0]["lr"] = lr
            for k, p in enumerate(ps):
                gr = torch.randn(shapes[k], generator=g, dtype=torch.float64)
                p.grad = gr.clone()
                gn = gr.numpy()
                bufs[k] = mom * bufs[k] + gn
                upd = gn + mom * bufs[k]
                X = self.ns_numpy(upd) * math.sqrt(max(1, shapes[k][0] / shapes[k][1]))
                ref[k] = ref[k] - lr * X
            opt.step()
            for k, p in enumerate(ps):
                self.assertLess(np.abs(p.detach().numpy() - ref[k]).max(), 1e-12, (it, k))

    def test_newton_schulz_properties(self):
        g = torch.Generator().manual_seed(2)
        G = torch.randn(32, 96, generator=g)
        X = roptim.zeropower_via_newtonschulz5(G, dtype=torch.float32)
        sv = torch.linalg.svdvals(X.double())
        self.assertGreater(sv.min().item(), 0.5)
        self.assertLess(sv.max().item(), 1.3)
        XT = roptim.zeropower_via_newtonschulz5(G.T.contiguous(), dtype=torch.float32)
        # the transposed input takes the transposed path: same result up to fp32 rounding
        self.assertLess((XT - X.T).abs().max().item(), 1e-5)
        Xb = roptim.zeropower_via_newtonschulz5(G, dtype=torch.bfloat16)
        self.assertEqual(Xb.dtype, torch.bfloat16)
        svb = torch.linalg.svdvals(Xb.double())
        self.assertGreater(svb.min().item(), 0.5)
        self.assertLess(svb.max().item(), 1.3)
        # five steps of a map with slope up to a = 3.4 amplify bf16's 2^-9 rounding: a few %
        rel = ((Xb.float() - X).norm() / X.norm()).item()
        self.assertLess(rel, 0.15)

    def test_optimizer_groups(self):
        m = rmodel.GPT(MICRO)
        opts = roptim.build_optimizers(m)
        ids = lambda o: {id(p) for g in o.param_groups for p in g["params"]}  # noqa: E731
        self.assertEqual(ids(opts[0]), {id(m.transformer.wte.weight)})
        self.assertEqual(ids(opts[1]), {id(m.lm_head.weight)})
        self.assertEqual(len(ids(opts[2])), 6 * MICRO.layers)
        self.assertEqual(len(ids(opts[3])), 2 * MICRO.layers + 1)
        self.assertEqual(sum(len(ids(o)) for o in opts), len(list(m.parameters())))
        self.assertEqual([o.param_groups[0]["lr"] for o in opts], [0.6, 0.008, 0.05, 0.04])
        self.assertEqual(opts[0].param_groups[0]["betas"], (0.8, 0.95))
        roptim.set_step_hparams(opts, 0.5, 0.9)
        self.assertEqual([o.param_groups[0]["lr"] for o in opts], [0.3, 0.004, 0.025, 0.02])
        self.assertEqual(opts[2].param_groups[0]["momentum"], 0.9)


class TestData(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.d = self.dir.name

    def tearDown(self):
        self.dir.cleanup()

    def test_loader_across_shards(self):
        rdata.write_shard(os.path.join(self.d, "s_001.bin"), np.arange(100, 130))
        rdata.write_shard(os.path.join(self.d, "s_000.bin"), np.arange(0, 40))
        pat = os.path.join(self.d, "s_*.bin")
        # one rank, B=2, T=4: step 8 tokens; shard A (N=40) starts 0, 8, 16, 24 (then
        # 32 + 8 >= 40), shard B (N=30) 0, 8, 16 (then 24 + 8 >= 30), then A again
        ld = rdata.DataLoader(pat, 2, 4)
        starts = []
        for _ in range(8):
            x, y = ld.next_batch()
            self.assertEqual(tuple(x.shape), (2, 4))
            self.assertEqual(x.dtype, torch.int64)
            flat_x, flat_y = x.flatten().tolist(), y.flatten().tolist()
            self.assertEqual(flat_y[:-1], flat_x[1:])
            self.assertEqual(flat_x, list(range(flat_x[0], flat_x[0] + 8)))
            self.assertEqual(flat_y[-1], flat_x[-1] + 1)
            starts.append(flat_x[0])
        self.assertEqual(starts, [0, 8, 16, 24, 100, 108, 116, 0])
        # rank 1 of 2: starts at 8, step 16: A: 8 (then 24 + 16 >= 40), B: 8 (24 + 16 >= 30)
        ld = rdata.DataLoader(pat, 2, 4, rank=1, world=2)
        self.assertEqual([ld.next_batch()[0][0, 0].item() for _ in range(3)], [8, 108, 8])
        ld.reset()
        self.assertEqual(ld.next_batch()[0][0, 0].item(), 8)

    def test_shard_validation(self):
        p = os.path.join(self.d, "bad.bin")
        rdata.write_shard(p, np.arange(10))
        self.assertEqual(rdata.read_shard_header(p), 10)
        raw = bytearray(read_bytes(p))
        write_bytes(p, raw[:-2])
        with self.assertRaises(ValueError):
            rdata.read_shard_header(p)
        raw[0] ^= 1
        write_bytes(p, raw)
        with self.assertRaises(ValueError):
            rdata.read_shard_header(p)
        rdata.write_shard(p, np.arange(10))
        with self.assertRaises(ValueError):  # 10 tokens < W*B*T + 1
            rdata.DataLoader(p, 1, 10)
        with self.assertRaises(ValueError):
            rdata.DataLoader(os.path.join(self.d, "none_*.bin"), 1, 4)

    def test_safetensors_round_trip(self):
        g = torch.Generator().manual_seed(0)
        tensors = {
            "a.f32": torch.randn(3, 5, generator=g),
            "b.bf16": (torch.randn(4, generator=g) * 1000).bfloat16(),
            "c.f64": torch.randn(2, 2, 2, generator=g, dtype=torch.float64),
            "d.i32": torch.tensor([-7, 0, 2 ** 31 - 1], dtype=torch.int32),
            "e.scalar": torch.tensor(0.5),
        }
        meta = {"layers": "2", "eot": "31"}
        p = os.path.join(self.d, "w.safetensors")
        rdata.save_safetensors(p, tensors, meta)
        got, gmeta = rdata.load_safetensors(p)
        self.assertEqual(gmeta, meta)
        self.assertEqual(set(got), set(tensors))
        for k, t in tensors.items():
            self.assertEqual(got[k].dtype, t.dtype, k)
            self.assertEqual(tuple(got[k].shape), tuple(t.shape), k)
            self.assertTrue(torch.equal(got[k], t), k)
        raw = read_bytes(p)
        (hlen,) = struct.unpack("<Q", raw[:8])
        self.assertEqual((8 + hlen) % 8, 0)
        header = json.loads(raw[8:8 + hlen])
        self.assertEqual(header["e.scalar"], {"dtype": "F32", "shape": [], "data_offsets":
                                              header["e.scalar"]["data_offsets"]})
        b, e = header["b.bf16"]["data_offsets"]
        want = tensors["b.bf16"].view(torch.int16).numpy().astype("<i2").tobytes()
        self.assertEqual(raw[8 + hlen + b:8 + hlen + e], want)
        write_bytes(p, raw[:-1])
        with self.assertRaises(ValueError):
            rdata.load_safetensors(p)


class TestTrain(unittest.TestCase):
    """A short run through the CLI on a learnable stream (a repeating pattern)."""

    def test_cli_run(self):
        with tempfile.TemporaryDirectory() as d:
            pattern = np.array([31, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11])
            rdata.write_shard(os.path.join(d, "train_000.bin"), np.tile(pattern, 300))
            rdata.write_shard(os.path.join(d, "val_000.bin"), np.tile(pattern, 40))
            m = rmodel.init_weights_(rmodel.GPT(MICRO), seed=0)
            init = os.path.join(d, "init.safetensors")
            rdata.save_safetensors(init, rmodel.state_dict_fp32(m), MICRO.to_metadata())
            out = os.path.join(d, "out")
            N = 12
            argv = ["--train", os.path.join(d, "train_*.bin"), "--val", os.path.join(d, "val_*.bin"),
                    "--init", init, "--seq-len", "32", "--batch", "2", "--steps", str(N),
                    "--cooldown", "4", "--val-every", "5", "--val-tokens", "128",
                    "--window-start", "64", "--window-end", "128", "--momentum-warmup", "6",
                    "--threads", "1", "--out", out, "--save-every", "5"]
            import contextlib
            import io
            with contextlib.redirect_stdout(io.StringIO()) as so:
                rtrain.main(argv)
            self.assertIn("step:1/12 train_loss:", so.getvalue())
            with open(os.path.join(out, "metrics.jsonl")) as f:
                lines = [json.loads(s) for s in f]
            train = [r for r in lines if "train_loss" in r]
            val = [r for r in lines if "val_loss" in r]
            self.assertEqual([r["step"] for r in train], list(range(N)))
            self.assertEqual([r["step"] for r in val], [0, 5, 10, 12])
            self.assertLess(abs(train[0]["train_loss"] - math.log(MICRO.vocab)), 2e-6)
            self.assertLess(abs(val[0]["val_loss"] - math.log(MICRO.vocab)), 2e-6)
            self.assertEqual([r["window"] for r in train],
                             [roptim.attention_window(s, N, 64, 128) for s in range(N)])
            self.assertEqual([r["lr"] for r in train], [roptim.lr_multiplier(s, N, 4) for s in range(N)])
            self.assertEqual(train[6]["momentum"], 0.95)
            self.assertLess(val[-1]["val_loss"], 0.6 * math.log(MICRO.vocab))
            self.assertEqual(sorted(f for f in os.listdir(out) if f.endswith(".safetensors")),
                             [f"model_step{s:06d}.safetensors" for s in (0, 5, 10, 12)])
            first, _ = rdata.load_safetensors(os.path.join(out, "model_step000000.safetensors"))
            for k, t in rmodel.state_dict_fp32(m).items():
                self.assertTrue(torch.equal(first[k], t), k)
            final, meta = rdata.load_safetensors(os.path.join(out, "model_step000012.safetensors"))
            self.assertEqual((meta["layers"], meta["step"], meta["eot"]), ("2", "12", "31"))
            self.assertEqual(final["transformer.h.0.attn.lamb"].item(), 0.5)  # zero gradient
            # a flag that contradicts the weights' metadata is refused
            with self.assertRaises(SystemExit):
                rtrain.main(argv + ["--vocab", "64"])


if __name__ == "__main__":
    unittest.main()
